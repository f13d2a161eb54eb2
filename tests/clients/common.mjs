// Helpers the client tests share: slimbert on the command line, a served model, checks.
import {execFileSync, spawn} from 'node:child_process';
import fs from 'node:fs';

export const [slimbert, vocab, fixtures, work] = process.argv.slice(2);
if (!slimbert || !vocab || !work) {
  console.error('usage: node TEST.mjs SLIMBERT VOCAB FIXTURES WORKDIR');
  process.exit(2);
}
fs.mkdirSync(work, {recursive: true});

export function cli(...args) {
  return execFileSync(slimbert, args, {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
}

// A tiny random model with the real vocabulary: --labels N adds a classifier (1: a cross-encoder).
export function tinyModel(name, labels) {
  const dir = `${work}/${name}`;
  if (!fs.existsSync(`${dir}/config.json`)) {
    const args = ['init', dir, '--preset', 'tiny', '--max-positions', '64', '--vocab', vocab];
    if (labels) args.push('--labels', String(labels));
    cli(...args);
  }
  return dir;
}

// Servers still running when the script ends (a failed check throws past their stop()).
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

// `slimbert serve` on a free port; resolves once it listens.
export function serve(dir, ...extra) {
  const child = spawn(
      slimbert,
      [
        'serve', dir, '--port', '0', '--widths', '1,0.5', '--depths', '1', '--log-format', 'none',
        ...extra
      ],
      {stdio: ['ignore', 'ignore', 'pipe']},
  );
  children.add(child);
  child.on('exit', () => children.delete(child));
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${log}`)), 120000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /listening on (http:\/\/[^ ]+:\d+) /.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({url: m[1], stop: () => child.kill('SIGTERM'), log: () => log});
      }
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}:\n${log}`)));
  });
}

let failures = 0;
export function check(ok, what) {
  if (!ok) {
    failures += 1;
    console.error(`FAIL: ${what}`);
  }
}
export function close(a, b, tolerance, what) {
  const worst = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
  check(a.length === b.length && worst <= tolerance, `${what}: largest difference ${worst}`);
}
export function done(name) {
  if (failures) {
    console.error(`${name}: ${failures} failures`);
    process.exit(1);
  }
  console.log(`${name}: all checks passed`);
}
