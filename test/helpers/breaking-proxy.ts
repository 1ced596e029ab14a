import net from 'node:net'

/** A TCP proxy in front of a real DICOM server that misbehaves for one instance only. */
export interface BreakingProxy {
  port: number
  /** Connections it broke (cut or stalled) because they carried the marker. */
  broken: number
  close(): Promise<void>
}

/**
 * Forwards every connection to 127.0.0.1:`targetPort` unchanged, except that a connection whose
 * sender writes `marker` (e.g. one SOP Instance UID, which travels in the C-STORE command) is
 * broken there: `cut` drops both sides at once (the sender sees the connection reset mid-request),
 * `stall` stops forwarding and answering, as a server hanging on one instance would. So a real
 * Orthanc behind it takes every other instance and answers every C-ECHO.
 */
export async function startBreakingProxy(targetPort: number, marker: Buffer, mode: 'cut' | 'stall'): Promise<BreakingProxy> {
  const sockets = new Set<net.Socket>()
  const proxy: BreakingProxy = {port: 0, broken: 0, close: async () => {}}
  const server = net.createServer((client) => {
    const upstream = net.connect({host: '127.0.0.1', port: targetPort})
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => {})
    }

    let tail = Buffer.alloc(0)
    let stalled = false
    client.on('data', (chunk: Buffer) => {
      if (stalled) return
      const window = Buffer.concat([tail, chunk])
      if (window.includes(marker)) {
        proxy.broken++
        if (mode === 'cut') {
          client.destroy()
          upstream.destroy()
        } else {
          stalled = true
          upstream.destroy()
        }

        return
      }

      tail = window.subarray(Math.max(0, window.length - marker.length + 1))
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!stalled) client.write(chunk)
    })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => {
      if (!stalled) client.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  proxy.port = (server.address() as net.AddressInfo).port
  proxy.close = async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  return proxy
}
