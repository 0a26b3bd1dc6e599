import { runKillLoop } from '@handoff/cluster';
import { describe, expect, it } from 'vitest';

/**
 * A few rounds of the kill -9 loop on a supervised local cluster: the source, the target, the
 * migrator and memstore each killed once at a random moment of a migration (fixed seed). The
 * long run is `npm run bench -- kill-loop`.
 */
describe('kill -9 during migrations', () => {
  it('after each kill the VM runs once, keeps its keys, owns exactly its region, and its job tells where it is', async () => {
    const lines: string[] = [];
    const reports = await runKillLoop({ rounds: 4, seed: 20261207, log: (l) => lines.push(l) });
    expect(reports.map((r) => r.victim)).toEqual(['source', 'target', 'migrator', 'memstore']);
    expect(
      reports.flatMap((r) => r.violations.map((v) => `round ${r.round} (${r.victim}): ${v}`)),
    ).toEqual([]);
  }, 300_000);
});
