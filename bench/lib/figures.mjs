// @ts-check
/**
 * Every figure of `npm run bench`: its target (the runner compares with these) and the prose that
 * docs/benchmarks.md prints for it (what it measures, what it is compared with, and why that
 * comparison is fair or where it is not). Measured values never live here: they come from the
 * results files.
 *
 * kind: ratio (reference time ÷ ddr time, higher is better), peak-rss (MB), latency (ms p50 and
 * p99), cpu (ms of router CPU per instance or per MB).
 */

/**
 * @typedef {{
 *   id: string, name: string, kind: 'ratio' | 'peak-rss' | 'latency' | 'cpu', unit: string, better: 'higher' | 'lower',
 *   target: number | null, measures: string, reference: string, fair: string
 * }} FigureSpec
 */

/** @type {FigureSpec[]} */
export const FIGURES = [
  {
    id: 'P1',
    name: 'end-to-end, spool on',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.9,
    measures:
      'storescu sends the small set on one association to `ddr listen` (store-and-forward, study ledger on) in front of two fresh Orthancs; the time runs from the start until the router counts a backend Success for every instance (its `/status`, polled every 5 ms).',
    reference: 'the same storescu sending the same files straight into one fresh Orthanc, in the same round.',
    fair:
      'Same sender, files, machine and round; in both cases a Success from Orthanc means stored. It is not like-for-like: ddr has two Orthancs to spread over, but a serial sender waits for each answer, so ddr wins only where the spool lets it answer before the backends have stored. The figure asks whether putting ddr in front costs a single modality anything.',
  },
  {
    id: 'P1b',
    name: 'end-to-end, --no-spool',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.9,
    measures: 'as P1 with `ddr listen --no-spool` (pass-through: Success only once an Orthanc stored the instance), in front of two more fresh Orthancs; the time is storescu\'s run.',
    reference: 'the direct run of the same P1 round.',
    fair: 'As P1; pass-through adds the router\'s round trip to every instance, so the serial sender sees the sum of both hops.',
  },
  {
    id: 'P1L',
    name: 'end-to-end, spool on: study ledger on vs off',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.95,
    measures: 'the P1 run of ddr (ledger on) against the same run with `studies.enabled: false`, on two more fresh Orthancs in the same round.',
    reference: 'ddr itself with the study ledger off.',
    fair: 'Like-for-like: the same router, sender, files and kind of backends; the only difference is the ledger, so the ratio is the ledger\'s own cost on the hot path.',
  },
  {
    id: 'P2',
    name: 'router overhead, --no-spool',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.8,
    measures: 'storescu sends the small set to `ddr listen --no-spool` forwarding to storescp (writing files, one process per association).',
    reference: 'storescu sending the same files straight into the same storescp, in the same round.',
    fair:
      'The like-for-like overhead figure: the same sender and the same receiver on both sides, the receiver so fast (about half a millisecond per instance) that the ratio is the cost of the extra hop (receive, check, forward, answer) and nothing else. A ratio near 0.5 means the hop costs as much as storescp itself.',
  },
  {
    id: 'P2b',
    name: 'router overhead, --no-spool, large instances',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.8,
    measures: 'as P2 with the big set (512 KB instances).',
    reference: 'storescu straight into the same storescp with the big set, same round.',
    fair: 'As P2: same sender and receiver; with large instances the copies of the bytes weigh more than the per-instance costs.',
  },
  {
    id: 'P2c',
    name: 'router overhead, spool on (until delivered)',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.8,
    measures: 'as P2 through a second `ddr listen` with its spool on, timed until the router counts storescp\'s Success for every instance.',
    reference: 'the direct storescu → storescp run of the same P2 round.',
    fair: 'Same sender and receiver; ddr also makes every instance durable (fdatasync) before it answers, which the reference does not do, so this is the price of the spool\'s guarantee on top of P2.',
  },
  {
    id: 'P4',
    name: 'ddr send vs storescu, one association into storescp',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 1,
    measures: 'the whole `ddr send` process (Node.js and oclif start-up included) sending the small set to storescp on one association.',
    reference: 'storescu sending the same files to the same storescp on one association, same round.',
    fair: 'Like-for-like: two command-line senders, one association each, the same files and receiver, both timed as whole processes.',
  },
  {
    id: 'P4c',
    name: 'as P4, ddr without process start-up',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 1,
    measures: 'the same `ddr send` runs as P4, timed by the `durationMs` that `--json` reports (listing, checking and sending, without Node.js and oclif start-up).',
    reference: 'the storescu runs of P4 (whole process: its start-up is a few milliseconds).',
    fair: 'Leans in ddr\'s favour (only its start-up is left out); it shows how much of P4 is start-up.',
  },
  {
    id: 'P4b',
    name: 'ddr send --concurrency 4 vs storescu, into Orthanc',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 1,
    measures: '`ddr send --concurrency 4` (whole process) sending the small set into a fresh Orthanc.',
    reference: 'storescu, one association, sending the same files into another fresh Orthanc, same round.',
    fair: 'Not like-for-like by design: each sender as a user would run it (storescu cannot open several associations); the receivers are alike and fresh.',
  },
  {
    id: 'P4-3000',
    name: 'ddr send vs storescu at scale, one association into storescp',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 1,
    measures: 'as P4 with the many set (3000 instances of 40 KB in a full run), where start-up and a cold JIT weigh less.',
    reference: 'storescu with the same files into the same storescp, same round.',
    fair: 'As P4: whole processes, one association each, same files and receiver.',
  },
  {
    id: 'P5',
    name: '8 concurrent senders, direct into one Orthanc vs through ddr into two',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 1.2,
    measures:
      'eight storescu processes at once, each sending its own study of 40 KB instances, to `ddr listen` (spool and ledger on) in front of two fresh Orthancs; timed until the router counts a backend Success for every instance.',
    reference: 'the same eight storescu processes at once straight into one fresh Orthanc, same round (the order of the two alternates from round to round).',
    fair:
      'Same senders, files and kind of receiver, fresh servers each round. ddr has two Orthancs where the reference has one: that is the point of a router in front of a fleet, and with several senders it should turn the second Orthanc into speed (target ≥ 1.2).',
  },
  {
    id: 'CL3',
    name: '8 concurrent senders through three routers behind HAProxy vs through one',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: null,
    measures:
      'the eight storescu processes of P5 at once into HAProxy (TCP, leastconn, /healthz checks) in front of three `ddr listen` routers that share a PostgreSQL ledger (study claims, heartbeats), each with its own spool, in front of two fresh Orthancs; timed until every router counts a backend Success for every instance it took. CPU: the three routers\' CPU time together, per instance.',
    reference: 'the same senders into one `ddr listen` with its embedded SQLite ledger in front of two fresh Orthancs, same round, order alternating; its CPU per instance.',
    fair:
      'Same senders, files and backends; the cluster pays for HAProxy, the claims and a database server on the same two cores, which is what this figure shows (no target on this machine: docs/cluster.md says what more cores change).',
  },
  {
    id: 'W2',
    name: '8 concurrent senders through `ddr listen --workers 2` vs `--workers 1`',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: null,
    measures:
      'after a warm-up of half as many instances (each worker compiles the same code; counted once per process, not in the figure), the eight storescu processes of P5 at once into `ddr listen --workers 2` (two router processes on one port: a spool folder each, one SQLite ledger with study claims) in front of two storescp destinations, so that the router and not a PACS is the limit; timed until the two destinations\' folders hold every instance (not by polling the router: with workers each poll of the primary\'s /status is an HTTP request to every worker, which would count as their CPU). CPU: every ddr process together (primary and workers), per instance.',
    reference: 'the same warm-up and senders into `ddr listen --workers 1` (one process, as before) in front of two fresh storescp, same round, order alternating; its CPU per instance.',
    fair:
      'Same senders, files and destinations; the ratio is the speed of two workers over one. On this 2-core machine the senders, storescp and ddr share two cores, so it shows what a second worker costs and buys here; docs/cluster.md ("Several cores on one host") says what more cores predict (no target).',
  },
  {
    id: 'QR-move',
    name: 'C-MOVE of a study through ddr vs straight from Orthanc',
    kind: 'ratio',
    unit: 'ratio',
    better: 'higher',
    target: 0.9,
    measures:
      'movescu asks `ddr listen` (in front of the Orthanc that holds the study and an empty one) to move one study of 40 KB instances to a storescp; ddr finds the instances by C-FIND on both Orthancs (the SOP classes once per study), fetches them from the holder by C-GET (one per series) and C-STOREs each, byte for byte, on its own association to the destination, opened while the instances are located. Timed until movescu has the final response.',
    reference: 'the same movescu asking the holding Orthanc itself to move the study to the same storescp (Orthanc knows it as a modality), same round, order alternating.',
    fair:
      'Same study, same destination, same requester; the reference is the best case of a single PACS that knows where its images are, while ddr first has to find them across the fleet and fetch them over HTTP: the figure is the price of one address for the whole fleet (target ≥ 0.9).',
  },
  {
    id: 'CPU-40k',
    name: 'router CPU per 40 KB instance (spool on, delivered to two Orthancs)',
    kind: 'cpu',
    unit: 'ms per instance',
    better: 'lower',
    target: 0.4,
    measures:
      'CPU time (user + system, all threads, from `/proc/<pid>/stat` in clock ticks of `getconf CLK_TCK`) of the `ddr listen` process over a window in steady state: after a warm-up batch, from the start of one storescu run of fresh instances until both Orthancs hold all of them (polled through Orthanc\'s REST API, so the router is not asked anything meanwhile) and a tenth of a second more (the spool release and the ledger\'s batched commit that follow the last Success), divided by the instances.',
    reference: 'none: an absolute figure (dcmtk\'s storescp handles such an instance in a few tenths of a millisecond, hence the target).',
    fair: 'The window includes everything the router does for those instances (receive, check, spool, ledger, deliver) and its idle work meanwhile (health checks); not the JIT warm-up.',
  },
  {
    id: 'CPU-512k',
    name: 'router CPU per MB of 512 KB instances (spool on, delivered to two Orthancs)',
    kind: 'cpu',
    unit: 'ms per MB',
    better: 'lower',
    target: null,
    measures: 'as CPU-40k with 512 KB instances (each streamed to a spool file of its own), divided by the megabytes (2^20 bytes) of the files sent.',
    reference: 'none: an absolute figure, reported without a target.',
    fair: 'As CPU-40k.',
  },
  {
    id: 'P3',
    name: 'peak RSS routing a huge instance and the big set',
    kind: 'peak-rss',
    unit: 'MB',
    better: 'lower',
    target: 150,
    measures: 'the peak resident set size (VmHWM) of `ddr listen` (spool on) after routing one huge instance and then the big set to storescp.',
    reference: 'the router\'s own peak while idle after start, shown for scale; the target is absolute.',
    fair: 'The figure shows that an instance is never held whole in memory: the peak must not grow with the instance.',
  },
  {
    id: 'LAT-spool',
    name: 'Success latency with spool (fsync)',
    kind: 'latency',
    unit: 'ms',
    better: 'lower',
    target: null,
    measures: 'the time from sending a C-STORE request to its Success at the sender (ddr\'s own SCU, one association, one instance at a time), through `ddr listen` with its spool on into one Orthanc: p50 and p99.',
    reference: 'none: reported without a target.',
    fair: 'Shows what one instance waits for: the spool\'s fdatasync, shared with whatever else writes to the disk.',
  },
  {
    id: 'LAT-pass',
    name: 'Success latency pass-through (Orthanc stored)',
    kind: 'latency',
    unit: 'ms',
    better: 'lower',
    target: null,
    measures: 'as LAT-spool with `--no-spool`: Success once Orthanc stored the instance.',
    reference: 'none: reported without a target.',
    fair: 'As LAT-spool; here the wait is Orthanc\'s store plus the router\'s two hops.',
  },
]

/**
 * The spec of a figure id (throws for an unknown one, so a typo in the runner fails loudly).
 * @param {string} id
 */
export function figureSpec(id) {
  const spec = FIGURES.find((f) => f.id === id)
  if (!spec) throw new Error(`no figure ${id} in bench/lib/figures.mjs`)
  return spec
}
