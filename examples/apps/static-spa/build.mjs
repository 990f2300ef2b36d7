// The "build": copy src/ to dist/, putting message.txt into the page.
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const message = readFileSync("message.txt", "utf8").trim();
rmSync("dist", { recursive: true, force: true });
mkdirSync("dist", { recursive: true });
cpSync("src", "dist", { recursive: true });
const page = readFileSync("src/index.html", "utf8").replace("__MESSAGE__", message);
writeFileSync("dist/index.html", page);
console.log(`built: ${message}`);
