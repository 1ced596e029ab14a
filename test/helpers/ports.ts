import net from 'node:net'

/** Ports handed out in this process, so two calls never return the same one before either is bound. */
const handedOut = new Set<number>()

/**
 * A TCP port that is free right now on every interface (the kernel picks it: bind port 0, read it, close).
 * Another process may still take it before it is used, so bind it soon.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer()
      server.once('error', reject)
      server.listen({port: 0, host: '0.0.0.0', exclusive: true}, () => {
        const address = server.address()
        const chosen = typeof address === 'object' && address !== null ? address.port : 0
        server.close(() => resolve(chosen))
      })
    })
    if (port !== 0 && !handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }

  throw new Error('freePort: no new free port after 50 attempts')
}

/** Several distinct free ports. */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = []
  for (let index = 0; index < count; index++) ports.push(await freePort())
  return ports
}
