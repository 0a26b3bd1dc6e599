import {
  closeSync,
  fdatasync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { MigratorError } from '../errors.js';
import { jobFromJournal, jobToJournal, type Job, type JournalJob } from './job.js';

/** Version of the journal's line format (`{"v":1,"job":{...}}`). */
export const JOURNAL_VERSION = 1;

/** File name of the journal inside `--state-dir`. */
export const JOURNAL_FILE = 'jobs.jsonl';

/** Finished jobs kept when the journal is compacted on start. */
export const KEEP_FINISHED = 500;

/**
 * The job journal: one JSON line per job snapshot, appended on every status
 * change through one open descriptor. Every line is written at once (a killed
 * migrator finds it); `durable` ones (ended jobs) are also fsynced before
 * `append` returns, and {@link JobJournal.sync} flushes the rest off the event
 * loop (the job runner awaits it before the first MigrateVm of a job). The
 * last line of a job wins. On open the file is replayed and compacted (one
 * line per job, at most {@link KEEP_FINISHED} finished jobs) through a
 * temporary file and a rename. A torn last line (a crash mid-append) and lines
 * of an unknown version are skipped.
 */
export class JobJournal {
  private readonly path: string;
  private fd: number | undefined;

  private constructor(dir: string) {
    this.path = join(dir, JOURNAL_FILE);
  }

  /** Opens (creating the directory) and returns the journal with the jobs it held. */
  static open(dir: string): { journal: JobJournal; jobs: Job[] } {
    try {
      mkdirSync(dir, { recursive: true });
      const journal = new JobJournal(dir);
      const jobs = journal.replay();
      journal.compact(jobs);
      return { journal, jobs };
    } catch (err) {
      throw new MigratorError(
        'MIGRATOR_JOURNAL_FAILED',
        `cannot open the job journal in ${dir}: ${(err as Error).message}; check --state-dir`,
        { cause: err },
      );
    }
  }

  /** Appends one job snapshot; `durable` ones are fsynced (with everything before them). */
  append(job: Job, durable = true): void {
    this.fd ??= openSync(this.path, 'a');
    const data = Buffer.from(line(jobToJournal(job)));
    try {
      for (let off = 0; off < data.length;) off += writeSync(this.fd, data, off);
      if (durable) fsyncSync(this.fd);
    } catch (err) {
      // a later append starts on a fresh descriptor
      this.close();
      throw err;
    }
  }

  /** Flushes every line written so far to disk, off the event loop (fdatasync). */
  sync(): Promise<void> {
    const fd = this.fd;
    if (fd === undefined) return Promise.resolve();
    return new Promise((resolve, reject) =>
      fdatasync(fd, (err) => (err === null ? resolve() : reject(err))),
    );
  }

  /** Closes the descriptor (fsyncing what was written); a later append reopens the file. */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  private replay(): Job[] {
    if (!existsSync(this.path)) return [];
    const byId = new Map<string, Job>();
    for (const text of readFileSync(this.path, 'utf8').split('\n')) {
      if (text.trim() === '') continue;
      try {
        const rec = JSON.parse(text) as { v?: unknown; job?: JournalJob };
        if (rec.v !== JOURNAL_VERSION || rec.job === undefined) continue;
        const job = jobFromJournal(rec.job);
        byId.delete(job.id);
        byId.set(job.id, job);
      } catch {
        // a torn line from a crash mid-append: the previous snapshot stands
      }
    }
    return [...byId.values()];
  }

  private compact(jobs: Job[]): void {
    const finished = jobs.filter((j) => j.finishedAt !== undefined);
    const drop = new Set(finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED)));
    const kept = jobs.filter((j) => !drop.has(j));
    jobs.splice(0, jobs.length, ...kept);
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, kept.map((j) => line(jobToJournal(j))).join(''));
    const fd = openSync(tmp, 'r');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.path);
  }
}

function line(job: JournalJob): string {
  return JSON.stringify({ v: JOURNAL_VERSION, job }) + '\n';
}
