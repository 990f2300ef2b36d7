// The "build", as `next build` lays it out: a build id and a prerendered page in .next/.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const message = readFileSync("message.txt", "utf8").trim();
rmSync(".next", { recursive: true, force: true });
mkdirSync(".next/server/pages", { recursive: true });
writeFileSync(".next/BUILD_ID", `${Date.now()}\n`);
writeFileSync(".next/server/pages/index.html", `<!doctype html><h1>${message}</h1>\n`);
console.log(`built .next: ${message}`);
