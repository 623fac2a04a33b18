/**
 * Writes the stack file the local Swarm deploys: stacks/app.yml with each service key that
 * stacks/local.yml names replaced whole. `docker stack deploy -c a -c b` would merge lists instead
 * (Traefik's health check command and ports would be appended to, not replaced), so the override is
 * applied here, on the YAML before interpolation: `$$` and `${…}` stay for `docker stack deploy`.
 *
 *   node --import tsx scripts/swarm-stack.ts <output file>
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isMap, parseDocument, type YAMLMap } from 'yaml';

const ROOT = resolve(import.meta.dirname, '..');
const output = process.argv[2];
if (!output) {
  process.stderr.write('usage: swarm-stack.ts <output file>\n');
  process.exit(64);
}

const app = parseDocument(readFileSync(join(ROOT, 'stacks/app.yml'), 'utf8'));
const local = parseDocument(readFileSync(join(ROOT, 'stacks/local.yml'), 'utf8'));
const overrides = local.get('services');
if (!isMap(overrides)) throw new Error('stacks/local.yml: services missing');
for (const item of overrides.items) {
  const name = String((item.key as { value: unknown }).value);
  const target = app.getIn(['services', name]);
  if (!isMap(target)) throw new Error(`stacks/local.yml overrides ${name}, which stacks/app.yml does not have`);
  for (const entry of (item.value as YAMLMap).items) target.set(entry.key, entry.value);
}
writeFileSync(output, app.toString({ lineWidth: 0 }));
