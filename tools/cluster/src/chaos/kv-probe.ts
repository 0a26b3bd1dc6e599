import { randomBytes } from 'node:crypto';
import { vms, type Clients, type VmView } from '@handoff/cli/client';

/**
 * Talks to a kvserver guest through its console: writes keys, reads them back. The probe of
 * "its memory is consistent": keys a guest stored before a fault answer the same after it.
 */

const DECODER = new TextDecoder();
const ENCODER = new TextEncoder();
const ANSWER = /^(OK|VALUE .*|NOT_FOUND|ERR.*)$/;

/**
 * Sends `commands` to a kvserver's console and resolves with one answer line per command. The
 * console first replays its backlog, so the exchange is framed by two unique sync values: answers
 * are the lines between the first sync's VALUE and the second sync's PUT answer.
 */
export async function ask(
  c: Clients,
  vm: VmView,
  commands: string[],
  timeoutMs = 10_000,
): Promise<string[]> {
  const open = randomBytes(6).toString('hex');
  const close = randomBytes(6).toString('hex');
  const session = vms.console(c, vm);
  let output = '';
  try {
    output = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`console of ${vm.name} on ${vm.vmm} did not answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      const end = `VALUE ${close}\n`;
      session.onOutput((bytes) => {
        output += DECODER.decode(bytes);
        if (output.endsWith(end) || output.includes(end)) {
          clearTimeout(timer);
          resolve(output);
        }
      });
      session.closed.then(
        () => {
          clearTimeout(timer);
          reject(new Error(`console of ${vm.name} on ${vm.vmm} closed before answering`));
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err as Error);
        },
      );
      const lines = [`PUT sync ${open}`, 'GET sync', ...commands, `PUT sync ${close}`, 'GET sync'];
      session.write(ENCODER.encode(lines.map((l) => `${l}\n`).join('')));
    });
  } finally {
    session.close();
  }
  const lines = output.split('\n');
  const from = lines.lastIndexOf(`VALUE ${open}`);
  const answers = lines.slice(from + 1).filter((l) => ANSWER.test(l));
  // answers: one per command, then OK (PUT sync close), VALUE close.
  return answers.slice(0, commands.length);
}

/** Stores `entries` in the guest; rejects unless every PUT answered OK. */
export async function putKeys(
  c: Clients,
  vm: VmView,
  entries: ReadonlyMap<string, string>,
): Promise<void> {
  const answers = await ask(
    c,
    vm,
    [...entries].map(([k, v]) => `PUT ${k} ${v}`),
  );
  const bad = answers.find((a) => a !== 'OK');
  if (bad !== undefined) throw new Error(`kvserver ${vm.name} refused a PUT: ${bad}`);
}

/** The keys whose stored value the guest no longer answers (empty: its memory kept them all). */
export async function wrongKeys(
  c: Clients,
  vm: VmView,
  entries: ReadonlyMap<string, string>,
): Promise<string[]> {
  const keys = [...entries.keys()];
  const answers = await ask(
    c,
    vm,
    keys.map((k) => `GET ${k}`),
  );
  return keys.filter((k, i) => answers[i] !== `VALUE ${entries.get(k)}`);
}
