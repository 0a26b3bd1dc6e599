/** Placeholder until the lazy mapping lands (branch fault): maps the region like a shared one. */
export { mapShared as mapLazy } from './shared.js';
