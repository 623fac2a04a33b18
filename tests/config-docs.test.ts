import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { CONFIG_VARIABLES } from '../shared/platform/config.ts';

const read = (file: string) => readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

describe('configuration documents', () => {
  test('every variable the config reads is in .env.example, with a comment above it, and in the README table', () => {
    const example = read('.env.example').split('\n');
    const readme = read('README.md');
    expect(CONFIG_VARIABLES.length).toBeGreaterThan(20);
    for (const name of CONFIG_VARIABLES) {
      const line = example.findIndex((text) => new RegExp(`^(# )?${name}=`).test(text));
      expect(line, `${name} in .env.example`).toBeGreaterThan(0);
      // A comment above it, or above the group of variables it belongs to (PORT= and HOST=).
      let above = line - 1;
      while (above > 0 && /^(# )?[A-Z0-9_]+=/.test(example[above]!)) above--;
      expect(example[above], `${name}: a comment above it in .env.example`).toMatch(/^#/);
      expect(readme, `${name} in the README's configuration table`).toMatch(new RegExp(`^\\|[^\\n]*\`${name}\``, 'm'));
    }
  });
});
