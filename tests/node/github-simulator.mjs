// GitHub's REST API as @simulacrum/github-api-simulator serves it (every route,
// requests checked against GitHub's OpenAPI schema, canned example answers),
// bound to 127.0.0.1 only. Usage: node github-simulator.mjs PORT
import { simulation } from "@simulacrum/github-api-simulator";

const port = Number(process.argv[2]);
if (!Number.isInteger(port)) {
  console.error("usage: node github-simulator.mjs PORT");
  process.exit(2);
}
simulation().listen(port, "127.0.0.1", () => {
  console.log(`github-api-simulator listening on http://127.0.0.1:${port}`);
});
