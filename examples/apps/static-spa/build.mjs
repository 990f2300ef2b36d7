// The "build": copy src/ to dist/, putting message.txt into the page and
// PUBLIC_TITLE (from the site's `env`, as a Vite app reads VITE_*) into its title.
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const message = readFileSync("message.txt", "utf8").trim();
rmSync("dist", { recursive: true, force: true });
mkdirSync("dist", { recursive: true });
cpSync("src", "dist", { recursive: true });
const title = process.env.PUBLIC_TITLE ?? "jaam sample";
const page = readFileSync("src/index.html", "utf8")
  .replace("__MESSAGE__", message)
  .replace("__TITLE__", title.replace(/[<&]/g, (c) => (c === "<" ? "&lt;" : "&amp;")));
writeFileSync("dist/index.html", page);
console.log(`built: ${message}`);
