/**
 * `npm run stack:routes`: writes the Traefik router labels of stacks/app.yml from the route table
 * (functions/routes.ts via scripts/lib/traefik.ts), keeping the rest of the file and its comments.
 * `--check` changes nothing and exits 1 when the file is out of date (scripts/deploy runs it).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMap, parseDocument } from 'yaml';
import { serviceLabels, stackRouters } from './lib/traefik.ts';

const ROOT = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: { check: { type: 'boolean', default: false }, file: { type: 'string', default: 'stacks/app.yml' } },
});
const file = resolve(ROOT, values.file);
const original = readFileSync(file, 'utf8');
const document = parseDocument(original);

for (const service of new Set(stackRouters().map((router) => router.service))) {
  const deploy = document.getIn(['services', service, 'deploy']);
  if (!isMap(deploy)) {
    process.stderr.write(`${file}: services.${service}.deploy is missing; add the service first\n`);
    process.exit(1);
  }
  const labels = document.createNode(serviceLabels(service));
  labels.commentBefore = ' Generated from functions/routes.ts by npm run stack:routes; do not edit by hand.';
  deploy.set('labels', labels);
}

const updated = document.toString({ lineWidth: 0, singleQuote: true, flowCollectionPadding: false });
if (values.check) {
  if (updated !== original) {
    process.stderr.write(`${join(values.file)} is out of date with functions/routes.ts: run npm run stack:routes\n`);
    process.exit(1);
  }
  process.stdout.write(`${values.file}: Traefik labels match the route table\n`);
} else if (updated !== original) {
  writeFileSync(file, updated);
  process.stdout.write(`${values.file}: Traefik labels regenerated\n`);
} else {
  process.stdout.write(`${values.file}: already up to date\n`);
}
