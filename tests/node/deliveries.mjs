// Real GitHub webhook payloads (@octokit/webhooks-examples), aimed at one
// repository and branch, signed with GitHub's reference signer
// (@octokit/webhooks-methods). Reads a JSON request on stdin:
//   {"secret": "...", "repo": "owner/name", "branch": "main",
//    "pushes": ["sha", ...], "merged": "sha",
//    "pulls": [{"action": "opened", "number": 7, "head": "sha", "fork": false}, ...]}
// and prints a JSON list of deliveries: {event, id, body, signature}: with
// "pulls", only those pull request events; otherwise a ping, the pushes, an
// unmerged closed pull request and the merged one.
// There is no merged pull_request example: one is derived from a closed one
// by setting `merged: true` and a `merge_commit_sha`, as GitHub sends it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import { sign } from "@octokit/webhooks-methods";

const require = createRequire(import.meta.url);
const examples = require("@octokit/webhooks-examples/api.github.com/index.json");
const request = JSON.parse(readFileSync(0, "utf8"));
const example = (name, pick = () => true) => {
  const found = examples.find((e) => e.name === name).examples.find(pick);
  return structuredClone(found);
};
const aim = (payload) => {
  payload.repository.full_name = request.repo;
  payload.repository.name = request.repo.split("/")[1];
  return payload;
};

const deliveries = [];
const add = async (event, payload) => {
  const body = JSON.stringify(payload);
  deliveries.push({ event, id: randomUUID(), body, signature: await sign(request.secret, body) });
};

if (!request.pulls) {
  await add("ping", aim(example("ping", (p) => p.repository !== undefined)));
  for (const sha of request.pushes ?? []) {
    const push = aim(example("push", (p) => !p.deleted));
    push.ref = `refs/heads/${request.branch}`;
    push.after = sha;
    await add("push", push);
  }
  const closed = example("pull_request", (p) => p.action === "closed");
  aim(closed);
  closed.pull_request.merged = false;
  closed.pull_request.base.ref = request.branch;
  await add("pull_request", closed);
  if (request.merged) {
    const merged = aim(example("pull_request", (p) => p.action === "closed"));
    merged.pull_request.merged = true;
    merged.pull_request.merge_commit_sha = request.merged;
    merged.pull_request.base.ref = request.branch;
    await add("pull_request", merged);
  }
}
// Pull request events (opened, synchronize, reopened, closed), from the
// example of an opened pull request, aimed at one number, head and base.
for (const pull of request.pulls ?? []) {
  const event = aim(example("pull_request", (p) => p.action === "opened"));
  event.action = pull.action;
  event.number = pull.number;
  event.pull_request.number = pull.number;
  event.pull_request.state = pull.action === "closed" ? "closed" : "open";
  event.pull_request.merged = false;
  event.pull_request.head.sha = pull.head;
  event.pull_request.head.repo.full_name = pull.fork ? `contributor/${event.repository.name}` : request.repo;
  event.pull_request.base.ref = request.branch;
  event.pull_request.base.repo.full_name = request.repo;
  await add("pull_request", event);
}
process.stdout.write(JSON.stringify(deliveries));
