import { runKillLoop, VICTIMS, type RoundReport } from '../chaos/kill-loop.js';

/**
 * The long kill -9 loop (`npm run bench -- kill-loop`): many rounds on one local cluster, one
 * table row per victim. `HANDOFF_KILL_ROUNDS` sets the number of rounds (default 52),
 * `HANDOFF_KILL_SEED` the plan's seed.
 */

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}

/** Runs the loop and tabulates outcomes per victim; the notes list every violation. */
export async function run() {
  const rounds = Number(process.env.HANDOFF_KILL_ROUNDS ?? 52);
  const seed = Number(process.env.HANDOFF_KILL_SEED ?? Date.now() % 100_000);
  const reports: RoundReport[] = await runKillLoop({
    rounds,
    seed,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  const rows = VICTIMS.map((victim) => {
    const mine = reports.filter((r) => r.victim === victim);
    const count = (vm: RoundReport['vm']) => mine.filter((r) => r.vm === vm).length;
    const recoveries = mine.map((r) => r.recoveryMs);
    return [
      victim,
      String(mine.length),
      String(count('moved')),
      String(count('stayed')),
      String(count('lost')),
      String(mine.filter((r) => r.violations.length > 0).length),
      `${median(recoveries)} ms`,
      `${Math.max(0, ...recoveries)} ms`,
    ];
  });
  const violations = reports.filter((r) => r.violations.length > 0);
  // Job outcomes with their numbers masked, counted (backticks become quotes: they are table text).
  const outcomes = new Map<string, number>();
  for (const r of reports) {
    const key = r.job.replace(/\d+/g, 'N').replaceAll('`', "'");
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  }
  return {
    title: `kill -9 loop: ${reports.length} rounds, seed ${seed}`,
    columns: [
      'killed',
      'rounds',
      'VM moved',
      'VM stayed',
      'VM lost with its vmm',
      'rounds with a violation',
      'recovery (median)',
      'recovery (worst)',
    ],
    rows,
    notes:
      'Each round starts a migration of a kvserver VM (bypass or copy, at random; the VM starts on a shared region, a copy moves it to private memory, and a VM lost with its vmm is created again on a shared region), kills one process with SIGKILL at a random moment, lets the launcher restart it, and checks: the VM runs at most once and only a dead vmm takes it, its keys answer the same, exactly its region exists and is leased by its vmm (or kept unleased after the VM was lost), the next migration goes through, the job status matches where the VM is. Recovery: from the kill until every check held.\n\n' +
      `Job outcomes seen:\n${[...outcomes].map(([j, n]) => `- ${n} × ${j}`).join('\n')}\n\n` +
      (violations.length === 0
        ? 'No violation.'
        : `Violations:\n${violations.map((r) => `- round ${r.round} (${r.victim}, ${r.mode}, ${r.killAfterMs} ms): ${r.violations.join('; ')}`).join('\n')}`),
  };
}
