// Builds the SDK into `dist/` (or the directory given): tsc type-checks and
// writes the declarations, esbuild bundles the sources into one ES module.
//   node build.mjs [outdir]
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const out = process.argv[2] ?? 'dist';
execFileSync(join('node_modules', '.bin', 'tsc'), ['-p', '.', '--outDir', join(out, 'types')], { stdio: 'inherit' });
await build({
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  legalComments: 'none',
  outfile: join(out, 'pantheon.js'),
  logLevel: 'warning',
});
