// Answers every request with message.txt, on $PORT (the deploy script picks it).
const http = require("node:http");
const fs = require("node:fs");

const message = fs.readFileSync("message.txt", "utf8").trim();
const port = Number(process.env.PORT || 3000);
http
  .createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/plain" });
    response.end(`${message}\n`);
  })
  .listen(port, "127.0.0.1", () => console.log(`listening on ${port}: ${message}`));
