import type { BurstResult } from './clones-handoff.js';
import type { QemuBurstRow } from './clones-tables.js';
import { MiB } from './qemu-qmp.js';
import { percentile } from './stats.js';

/**
 * The charts of `npm run bench -- clones`, as vega-lite specifications (plain data: bench/run.js
 * renders them to SVG with vega, so this package needs no charting library).
 */

/** A chart to write as bench/<file>. */
export interface ChartFile {
  readonly file: string;
  readonly spec: Record<string, unknown>;
}

interface Point {
  clones: number;
  series: string;
  value: number;
}

/**
 * Grouped bars on a log scale: one group per clone count, one bar per series. A value that is
 * not positive (a PSS delta lost in the noise of a small burst) has no place on it and is left
 * out; the table still shows it.
 */
function groupedBars(title: string, yTitle: string, values: Point[]): Record<string, unknown> {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 360,
    height: 220,
    data: { values: values.filter((v) => v.value > 0) },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      x: { field: 'clones', type: 'ordinal', title: 'clones in the burst' },
      xOffset: { field: 'series' },
      y: {
        field: 'value',
        type: 'quantitative',
        title: yTitle,
        scale: { type: 'log' },
        stack: null,
      },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

/** p50 and p99 of request (Handoff) or spawn (QEMU) to running, per burst size. */
export function burstChart(ours: BurstResult[], qemu: QemuBurstRow[]): ChartFile {
  const values: Point[] = [];
  for (const r of ours) {
    values.push(
      { clones: r.count, series: 'Handoff p50', value: percentile(r.runningAfterUs, 50) / 1000 },
      { clones: r.count, series: 'Handoff p99', value: percentile(r.runningAfterUs, 99) / 1000 },
    );
  }
  for (const q of qemu) {
    if ('skipped' in q) continue;
    values.push(
      { clones: q.count, series: 'QEMU p50', value: percentile(q.startToRunningMs, 50) },
      { clones: q.count, series: 'QEMU p99', value: percentile(q.startToRunningMs, 99) },
    );
  }
  return {
    file: 'clones-burst.svg',
    spec: groupedBars('Clone burst: time to running per clone', 'ms (log scale)', values),
  };
}

/** PSS per idle clone, per burst size: Handoff's as started and after one request, QEMU's. */
export function pssChart(
  ours: BurstResult[],
  big: BurstResult | string,
  qemu: QemuBurstRow[],
): ChartFile {
  const values: Point[] = [];
  for (const r of [...ours, ...(typeof big === 'string' ? [] : [big])]) {
    if (r.count <= 1) continue;
    values.push({
      clones: r.count,
      series: 'Handoff, as started',
      value: r.pssPerCloneBytes / MiB,
    });
    if (r.answeredPssPerCloneBytes !== null) {
      values.push({
        clones: r.count,
        series: 'Handoff, after one request',
        value: r.answeredPssPerCloneBytes / MiB,
      });
    }
  }
  for (const q of qemu) {
    if ('skipped' in q || q.count <= 1) continue;
    values.push({
      clones: q.count,
      series: 'QEMU, after one request',
      value: q.pssPerCloneBytes / MiB,
    });
  }
  return {
    file: 'clones-pss.svg',
    spec: groupedBars('PSS per idle clone', 'MiB per clone (log scale)', values),
  };
}
