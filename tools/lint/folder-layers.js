// @ts-check
/**
 * ESLint rule `layers/folder-layers`: inside one source tree, each top-level folder may import
 * only the folders its layer lists — so no folder imports one above it and folders never form a
 * circle. Relative imports only (packages are the Nx boundary rule's business).
 *
 * Options: `{ root: 'apps/vmm/src', layers: { folder: ['folder it may import', ...] } }`. A
 * file directly in `root` is named by its file name (`config.ts`); files directly in `root`
 * that no layer lists are unrestricted (the entry points).
 */
import { dirname, relative, resolve, sep } from 'node:path';

/** The top-level folder (or root file name) of `path` under `root`, or null outside it. */
function placeOf(root, path) {
  const rel = relative(root, path);
  if (rel.startsWith('..') || rel === '') return null;
  const top = rel.split(sep)[0] ?? '';
  // ESM specifiers name the compiled `.js`; the tree holds the `.ts`.
  return top.endsWith('.js') ? `${top.slice(0, -3)}.ts` : top;
}

/** @type {import('eslint').Rule.RuleModule} */
const folderLayers = {
  meta: {
    type: 'problem',
    docs: { description: 'a folder imports only the folders below it' },
    schema: [
      {
        type: 'object',
        properties: {
          root: { type: 'string' },
          layers: {
            type: 'object',
            additionalProperties: { type: 'array', items: { type: 'string' } },
          },
        },
        required: ['root', 'layers'],
        additionalProperties: false,
      },
    ],
  },
  create(context) {
    const { root: rootOpt, layers } = context.options[0];
    const root = resolve(context.cwd, rootOpt);
    const file = context.filename;
    const from = placeOf(root, file);
    if (from === null || !Object.hasOwn(layers, from)) return {};
    const allowed = new Set([from, ...layers[from]]);
    /** @param {import('estree').Node & { source?: import('estree').Expression | null }} node */
    const check = (node) => {
      const source = node.source;
      if (source?.type !== 'Literal' || typeof source.value !== 'string') return;
      if (!source.value.startsWith('.')) return;
      const to = placeOf(root, resolve(dirname(file), source.value));
      if (to === null || allowed.has(to)) return;
      context.report({
        node: source,
        message:
          `${rootOpt}/${from} may not import ${rootOpt}/${to}: it may import only ` +
          `${[...layers[from]].join(', ') || 'nothing of the tree'} (the layer table in eslint.config.js)`,
      });
    };
    return {
      ImportDeclaration: check,
      ExportNamedDeclaration: check,
      ExportAllDeclaration: check,
      ImportExpression: check,
    };
  },
};

export default { rules: { 'folder-layers': folderLayers } };
