#!/usr/bin/env node
// npm run bench [-- NAME ...]: run the named benchmarks (default: all) and print their reports.
const all = { smtp: () => import('./smtp.mjs'), queue: () => import('./queue.mjs'), https: () => import('./https.mjs'), monitor: () => import('./monitor.mjs') };
const names = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const name of names.length ? names : Object.keys(all)) {
  if (!all[name]) {
    console.error(`unknown benchmark ${name}; known: ${Object.keys(all).join(', ')}`);
    process.exit(2);
  }
  const { run } = await all[name]();
  await run();
}
