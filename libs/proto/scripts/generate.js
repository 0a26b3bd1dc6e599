#!/usr/bin/env node
// Regenerates libs/proto from /proto: lints the module, runs ts-proto through
// buf, and writes the descriptor set that server reflection serves.
// `--check` fails (exit 1) when the committed output differs from a fresh run.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const root = join(pkgDir, '..', '..');
const buf = join(root, 'node_modules', '.bin', 'buf');
const check = process.argv.includes('--check');

function run(args, cwd) {
  try {
    execFileSync(buf, args, { cwd, stdio: 'inherit' });
  } catch {
    console.error(
      `buf ${args[0]} failed (see above): fix proto/ and run \`npm run generate\` again.`,
    );
    process.exit(1);
  }
}

function listFiles(dir, base = dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p, base));
    else out.push(relative(base, p));
  }
  return out.sort();
}

run(['lint'], join(root, 'proto'));

const work = check ? mkdtempSync(join(tmpdir(), 'handoff-proto-')) : pkgDir;
if (check) {
  cpSync(join(pkgDir, 'buf.gen.yaml'), join(work, 'buf.gen.yaml'));
} else {
  rmSync(join(pkgDir, 'src', 'gen'), { recursive: true, force: true });
}
const genYaml = readFileSync(join(pkgDir, 'buf.gen.yaml'), 'utf8')
  .replaceAll('../../proto', join(root, 'proto'))
  .replaceAll('../../node_modules', join(root, 'node_modules'));
run(['generate', '--template', genYaml], work);
run(['build', join(root, 'proto'), '-o', join(work, 'descriptors.binpb')], work);

if (check) {
  const fresh = listFiles(join(work, 'src', 'gen'));
  const committed = listFiles(join(pkgDir, 'src', 'gen'));
  const problems = [];
  if (fresh.join('\n') !== committed.join('\n')) problems.push('file list differs');
  for (const f of fresh) {
    const a = readFileSync(join(work, 'src', 'gen', f));
    let b;
    try {
      b = readFileSync(join(pkgDir, 'src', 'gen', f));
    } catch {
      continue;
    }
    if (!a.equals(b)) problems.push(`src/gen/${f} differs`);
  }
  if (
    !readFileSync(join(work, 'descriptors.binpb')).equals(
      readFileSync(join(pkgDir, 'descriptors.binpb')),
    )
  ) {
    problems.push('descriptors.binpb differs');
  }
  rmSync(work, { recursive: true, force: true });
  if (problems.length > 0) {
    console.error(
      `libs/proto is stale (${problems.join('; ')}): run \`npm run generate\` and commit the result.`,
    );
    process.exit(1);
  }
  console.log('libs/proto matches proto/.');
}
