// Renders a suite's charts: vega-lite specifications (plain JSON a suite returns beside its
// tables, as `charts: [{ file, spec }]`) compiled with vega-lite and drawn to SVG by vega in
// Node, with no browser and no canvas. vega and vega-lite are root devDependencies, pinned to
// versions that run on Node 20.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Writes every chart of `tables` as `<dir>/<file>`; resolves with the files written. */
export async function renderCharts(tables, dir) {
  const charts = tables.flatMap((t) => t.charts ?? []);
  if (charts.length === 0) return [];
  const vega = await import('vega');
  const vegaLite = await import('vega-lite');
  const written = [];
  for (const { file, spec } of charts) {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
    try {
      writeFileSync(join(dir, file), await view.toSVG());
      written.push(file);
    } finally {
      view.finalize();
    }
  }
  return written;
}
