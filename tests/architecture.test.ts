import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const SOURCE = /\.(ts|mts|mjs|astro)$/;
const IMPORT = /(?:^|\s)(?:import|export)\s(?:[^'"]*?\sfrom\s)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return ['node_modules', 'dist', '.astro'].includes(entry.name) ? [] : sourceFiles(path);
    return SOURCE.test(entry.name) ? [path] : [];
  });
}

/** Every relative import in the tree, as repository paths: `from` imports `to`. */
function importsUnder(dir: string): { from: string; to: string }[] {
  return sourceFiles(dir).flatMap((from) => {
    const text = readFileSync(join(ROOT, from), 'utf8');
    return [...text.matchAll(IMPORT)].map((match) => ({
      from,
      to: relative(ROOT, resolve(ROOT, dirname(from), (match[1] ?? match[2])!)),
    }));
  });
}

/** Which room a path is in; the order of ROOMS is the only direction imports may point. */
const ROOMS = ['scripts', 'site', 'functions', 'shared/runtime', 'shared/domain', 'shared/platform', 'shared/schema.ts'] as const;
const roomOf = (path: string): number => ROOMS.findIndex((room) => path === room || path.startsWith(`${room}/`));

describe('architecture', () => {
  const edges = ['shared', 'functions', 'site', 'scripts'].flatMap(importsUnder);

  it('finds the imports it checks (the scan is not empty)', () => {
    expect(edges.length).toBeGreaterThan(200);
    expect(edges).toContainEqual({ from: 'functions/ingest/app.ts', to: 'shared/platform/http/app.ts' });
  });

  it('has imports that only point down: scripts → site → functions → shared runtime → domain → platform', () => {
    const upward = edges.filter(({ from, to }) => {
      const fromRoom = roomOf(from);
      const toRoom = roomOf(to);
      return fromRoom >= 0 && toRoom >= 0 && toRoom < fromRoom;
    });
    expect(upward).toEqual([]);
  });

  it('keeps the site off the functions: the site imports shared code only', () => {
    const intoFunctions = edges.filter(
      ({ from, to }) => from.startsWith('site/') && (to.startsWith('functions/') || to.startsWith('scripts/')),
    );
    expect(intoFunctions).toEqual([]);
  });

  it('keeps shared code from importing anything outside shared (but the package manifest)', () => {
    const outside = edges.filter(({ from, to }) => from.startsWith('shared/') && !to.startsWith('shared/') && to !== 'package.json');
    expect(outside).toEqual([]);
  });

  it('gives every HTTP function folder the same files with the same meaning', () => {
    // schema (zod), routes (specs), app (registration), handler (Lambda), server (listen), and its test.
    for (const name of ['ingest', 'usage', 'health', 'tenants']) {
      const files = readdirSync(join(ROOT, 'functions', name)).sort();
      expect(files, name).toEqual(['app.ts', 'handler.ts', `${name}.test.ts`, 'routes.ts', 'schema.ts', 'server.ts'].sort());
    }
  });
});
