/** The writer-lease holder of a page source: `<reader memstore id>/lazy/<source id>`. */
export function pageSourceHolder(reader: string, sourceId: string): string {
  return `${reader}/lazy/${sourceId}`;
}

/**
 * True for a page source's holder. Such a holder is no vmm session: the dead-holder sweep must
 * never fence it (the lease is the page source's until ClosePageSource).
 */
export function isPageSourceHolder(holder: string): boolean {
  const slash = holder.indexOf('/');
  return slash > 0 && holder.startsWith('lazy/', slash + 1);
}
