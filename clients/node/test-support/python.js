// The repository's Python side for the Node tests: test/fixtures.py run with the repo's
// venv, writing reference vectors or serving a tiny model on loopback.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
export const REPO = join(PACKAGE, '..', '..');
const FIXTURES = join(PACKAGE, 'test', 'fixtures.py');
const STARTUP_MS = 180_000;

/** The Python that has handspring: $HANDSPRING_PYTHON, else the repository's .venv. */
export function python() {
  const chosen = process.env.HANDSPRING_PYTHON ?? join(REPO, '.venv', 'bin', 'python');
  return existsSync(chosen) ? chosen : null;
}

/** Why the Python-backed tests cannot run here, or null when they can. */
export function skipReason() {
  return python() === null
    ? `no Python with handspring: set HANDSPRING_PYTHON or create ${join(REPO, '.venv')}`
    : null;
}

/** A temporary folder, removed by the returned function. */
export function scratch(prefix) {
  const folder = mkdtempSync(join(tmpdir(), prefix));
  return { folder, remove: () => rmSync(folder, { recursive: true, force: true }) };
}

function start(args, work) {
  const child = spawn(python(), [FIXTURES, ...args], {
    cwd: REPO,
    env: { ...process.env, HANDSPRING_CACHE: join(work, 'cache'), PYTHONDONTWRITEBYTECODE: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, stderr: () => stderr };
}

/** The first JSON line the script prints. */
function firstLine(run, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${what}: no answer within ${STARTUP_MS} ms\n${run.stderr()}`));
    }, STARTUP_MS);
    const lines = createInterface({ input: run.child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line));
    });
    run.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before answering\n${run.stderr()}`));
    });
  });
}

/**
 * Writes the reference vectors (see fixtures.py `references`) into `folder`.
 * @returns {Promise<string>} the path of references.json
 */
export async function writeReferences(folder) {
  const run = start(['references', join(folder, 'references')], folder);
  run.child.stdin.end();
  const answer = await firstLine(run, 'fixtures.py references');
  const { code } = await run.exited;
  if (code !== 0) throw new Error(`fixtures.py references failed (${code})\n${run.stderr()}`);
  return answer.references;
}

/**
 * Starts a server (see fixtures.py `serve`).
 * @returns {Promise<{ url: string, grpc: string, export: string, stop: () => Promise<void> }>}
 */
export async function startServer(folder, apiKey) {
  const run = start(['serve', join(folder, 'server'), apiKey], folder);
  let answer;
  try {
    answer = await firstLine(run, 'fixtures.py serve');
  } catch (error) {
    run.child.kill();
    throw error;
  }
  const stop = async () => {
    run.child.stdin.end(); // the script stops its server when its input closes
    const timer = setTimeout(() => run.child.kill(), 30_000);
    await run.exited;
    clearTimeout(timer);
  };
  return { ...answer, stop };
}
