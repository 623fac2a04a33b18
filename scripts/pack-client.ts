/**
 * Builds `@flagmeter/client` (packages/client: compiled ESM and .d.ts in its dist/) and packs it:
 *
 *   npm run pack:client [-- <destination folder>]     (default: dist/ at the root)
 *
 * The tarball's absolute path is the last line printed. tests/client-package.test.ts calls packClient().
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = join(import.meta.dirname, '..');
export const CLIENT_PACKAGE_DIR = join(ROOT, 'packages', 'client');

export interface PackedClient {
  /** Absolute path of the .tgz. */
  tarball: string;
  /** Bytes of the tarball, as npm reports them. */
  size: number;
  unpackedSize: number;
  files: string[];
}

interface NpmPackEntry {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string }[];
}

/** Compiles the package from its source (a clean dist/, so no stale file ships) and writes its tarball. */
export function packClient(destination: string = join(ROOT, 'dist')): PackedClient {
  const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
  rmSync(join(CLIENT_PACKAGE_DIR, 'dist'), { recursive: true, force: true });
  execFileSync(process.execPath, [tsc, '-p', join(CLIENT_PACKAGE_DIR, 'tsconfig.json')], { stdio: 'inherit' });
  const target = resolve(destination);
  mkdirSync(target, { recursive: true });
  const output = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', target], {
    cwd: CLIENT_PACKAGE_DIR,
    encoding: 'utf8',
    // npm's notices go to stderr; only the JSON is read.
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const [entry] = JSON.parse(output) as NpmPackEntry[];
  if (!entry) throw new Error('npm pack wrote no tarball');
  return {
    tarball: join(target, entry.filename),
    size: entry.size,
    unpackedSize: entry.unpackedSize,
    files: entry.files.map((file) => file.path).sort(),
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const packed = packClient(process.argv[2]);
  process.stdout.write(
    `${packed.files.join('\n')}\n${packed.files.length} files, ${packed.size} bytes packed, ${packed.unpackedSize} bytes unpacked\n`,
  );
  process.stdout.write(`${packed.tarball}\n`);
}
