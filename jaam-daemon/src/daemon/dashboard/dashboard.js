// jaam dashboard: sign in, action buttons, relative times, the live log.
"use strict";

const csrf = document.querySelector('meta[name="jaam-csrf"]').content;

function toast(text, bad) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ""; }, 5000);
}

async function send(method, url, body) {
  const headers = { "X-Jaam-Csrf": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await answer.json(); } catch (_) { /* an empty answer */ }
  return { ok: answer.ok, status: answer.status, data };
}

// Sign in and out.
for (const form of document.querySelectorAll("[data-sign-in]")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = form.elements.token.value;
    const answer = await send("POST", "/session", { token });
    if (answer.ok) location.reload();
    else toast(answer.data.error || "sign-in failed", true);
  });
}
for (const button of document.querySelectorAll("[data-sign-out]")) {
  button.addEventListener("click", async () => {
    await send("DELETE", "/session");
    location.reload();
  });
}

// Action buttons: POST with the CSRF header; the answer as a toast.
for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", async () => {
    const question = button.dataset.confirm;
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      const answer = await send("POST", button.dataset.action);
      if (answer.ok) {
        toast(answer.data.rolled_back ? "Rolled back" : "Scheduled: the page follows along");
        setTimeout(() => location.reload(), answer.data.rolled_back ? 600 : 4000);
      } else {
        toast(answer.data.error || `refused (${answer.status})`, true);
      }
    } catch (error) {
      toast(String(error), true);
    } finally {
      button.disabled = false;
    }
  });
}

// "3 min ago", kept fresh.
function ago(date) {
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} days ago`;
}
function refreshTimes() {
  for (const el of document.querySelectorAll("time[datetime]")) {
    el.textContent = ago(new Date(el.getAttribute("datetime")));
  }
}
setInterval(refreshTimes, 15000);

// The live log: server-sent events, one line each, kept scrolled to the
// end unless the reader scrolled up. A new deploy row appears by reloading
// the history when the log says a deploy finished.
const log = document.getElementById("log");
if (log) {
  const live = document.getElementById("live");
  const source = new EventSource(log.dataset.logs);
  const seen = new Set();
  const append = (stream, data) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const space = data.indexOf(" ");
    const line = document.createElement("div");
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = space > 0 ? data.slice(11, 19) + " " : "";
    const text = document.createElement("span");
    if (stream === "app") text.className = "app";
    // The deploy script stamps its own lines ("2026-…Z [site] …"): shown once.
    const message = space > 0 ? data.slice(space + 1) : data;
    text.textContent = message.replace(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[[^\]]*\] /, "");
    line.append(ts, text);
    log.append(line);
    while (log.childElementCount > 2000) log.firstElementChild.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
    if (/serving [0-9a-f]{7,}|build of [0-9a-f]+ failed|rollback from/.test(data)) refreshHistory();
  };
  for (const stream of ["build", "app", "lagged", "message"]) {
    source.addEventListener(stream, (event) => {
      if (event.lastEventId) {
        if (seen.has(event.lastEventId)) return;
        seen.add(event.lastEventId);
      }
      append(stream, event.data);
    });
  }
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live"; };
}

// Re-reads the history table from the page itself (no JSON API needed).
let refreshing = null;
function refreshHistory() {
  clearTimeout(refreshing);
  refreshing = setTimeout(async () => {
    const answer = await fetch(location.pathname, { credentials: "same-origin" });
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.getElementById("history");
    const old = document.getElementById("history");
    if (!fresh) return;
    const known = new Set(old ? [...old.querySelectorAll("time")].map((t) => t.getAttribute("datetime")) : []);
    for (const time of fresh.querySelectorAll("tbody time")) {
      if (!known.has(time.getAttribute("datetime"))) time.closest("tr").classList.add("new");
    }
    if (old) old.replaceWith(fresh);
    else location.reload();
    const serving = page.getElementById("serving");
    if (serving) document.getElementById("serving").replaceWith(serving);
    refreshTimes();
  }, 1500);
}
if (log) setInterval(() => { if (!document.hidden) refreshHistory(); }, 5000);
