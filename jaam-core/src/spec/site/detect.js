// The detector of `framework: auto` on the instance (deploy.sh embeds it, quoted).
// Reads ./package.json, prints framework|output_dir|reason by the rules in argv[1]
// (jaam's `site::detect` as JSON: the plan's note and the build agree).
const fs = require("fs");
const d = JSON.parse(process.argv[1]);
const say = (framework, dir, reason) => console.log([framework, dir, reason].join("|"));
let text;
try { text = fs.readFileSync("package.json", "utf8"); } catch { say("static", ".", d.missing); process.exit(0); }
let pkg;
try { pkg = JSON.parse(text); } catch { say("static", "", d.invalid); process.exit(0); }
const has = (section, name) => pkg && typeof pkg[section] === "object" && pkg[section] !== null &&
  Object.prototype.hasOwnProperty.call(pkg[section], name);
for (const r of d.rules) {
  const found = r.section === "scripts" ? has("scripts", r.name)
    : has("dependencies", r.name) || has("devDependencies", r.name);
  if (found) { say(r.framework, r.output_dir, r.reason); process.exit(0); }
}
say("static", "", d.none);
