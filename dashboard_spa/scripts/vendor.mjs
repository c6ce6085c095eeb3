// Copies the pinned libraries the dashboard uses from node_modules into vendor/ (checked in), so the SPA runs
// as plain static files with no CDN and no build step. `npm ci && npm run vendor` reproduces vendor/ exactly;
// `npm run vendor:check` fails when vendor/ differs from what the lockfile's versions give.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendor = join(root, "vendor");

const FILES = [
  { pkg: "marked", from: "lib/marked.esm.js", to: "marked.esm.js", license: "LICENSE" },
  { pkg: "dompurify", from: "dist/purify.es.mjs", to: "purify.es.mjs", license: "LICENSE" },
];

// Source maps are not shipped: drop the pointer so browsers do not ask for a missing file.
const stripMap = (text) => text.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");

const outputs = new Map();
const versions = {};
for (const { pkg, from, to, license } of FILES) {
  const base = join(root, "node_modules", pkg);
  const meta = JSON.parse(readFileSync(join(base, "package.json"), "utf8"));
  versions[pkg] = meta.version;
  outputs.set(to, stripMap(readFileSync(join(base, from), "utf8")));
  if (existsSync(join(base, license))) outputs.set(`${pkg}.LICENSE.txt`, readFileSync(join(base, license), "utf8"));
}
outputs.set("VERSIONS.json", JSON.stringify(versions, null, 2) + "\n");

if (process.argv.includes("--check")) {
  const stale = [...outputs].filter(([name, text]) => {
    const path = join(vendor, name);
    return !existsSync(path) || readFileSync(path, "utf8") !== text;
  });
  if (stale.length) {
    console.error(`vendor/ is out of date: ${stale.map(([n]) => n).join(", ")} (run npm run vendor)`);
    process.exit(1);
  }
  console.log("vendor/ matches", versions);
} else {
  mkdirSync(vendor, { recursive: true });
  for (const [name, text] of outputs) writeFileSync(join(vendor, name), text);
  console.log("vendored", versions);
}
