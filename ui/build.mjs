// Bundles src/main.tsx and its CSS into ../dkron_nats/ui_dist/ (hashed names under assets/, cached forever by
// the server) and writes index.html from the template with absolute /ui/assets/ references: the server answers
// /ui and /ui/ alike, so relative references would break.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "dkron_nats", "ui_dist");
const assets = join(out, "assets");

const result = await build({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  sourcemap: false,
  write: false,
  outdir: "bundle",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  logLevel: "warning",
});

const hash = (data) => createHash("sha256").update(data).digest("hex").slice(0, 12);
const named = {};
for (const file of result.outputFiles) {
  const kind = file.path.endsWith(".css") ? "css" : "js";
  named[kind] = { name: `app-${hash(file.contents)}.${kind}`, contents: file.contents };
}
if (!named.js || !named.css) throw new Error("esbuild produced no JS or no CSS bundle");

await rm(out, { recursive: true, force: true });
await mkdir(assets, { recursive: true });
for (const { name, contents } of Object.values(named)) await writeFile(join(assets, name), contents);
const template = await readFile(join(here, "index.html"), "utf8");
const page = template
  .replace("{{JS}}", `/ui/assets/${named.js.name}`)
  .replace("{{CSS}}", `/ui/assets/${named.css.name}`);
await writeFile(join(out, "index.html"), page);
console.log(`built ${named.js.name} (${named.js.contents.length} B), ${named.css.name} (${named.css.contents.length} B)`);
