import net from 'node:net'

/** Why an allowedAddresses entry is not usable, or undefined when it is an IP address or a CIDR block. */
export function addressEntryProblem(entry: string): string | undefined {
  const [address, prefix, ...rest] = entry.split('/')
  const family = net.isIP(address)
  if (family === 0 || rest.length > 0) return 'an IPv4/IPv6 address or CIDR block (e.g. "10.0.0.0/8")'
  if (prefix === undefined) return undefined
  const max = family === 4 ? 32 : 128
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return `a CIDR prefix length from 0 to ${max}`
  return undefined
}
