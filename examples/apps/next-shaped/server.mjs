// `next start -p PORT`, shaped: serves the prerendered page of .next/ on 127.0.0.1.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";

const flag = process.argv.indexOf("-p");
const port = Number(flag >= 0 ? process.argv[flag + 1] : process.env.PORT || 3000);
const page = readFileSync(".next/server/pages/index.html", "utf8");
createServer((request, response) => {
  response.writeHead(200, { "content-type": "text/html" });
  response.end(page);
}).listen(port, "127.0.0.1", () => console.log(`ready on ${port}`));
