"""The demo page served at ``/``: plain HTML, CSS and JavaScript in one
document, no external assets (it talks only to the service's own routes).

Pick a known user (or open "New user" and give features and history): the
page shows the user's recent history, the top k as image cards with the
ranker's click probability and the retrieval score and rank, and the
candidates retrieval put in its own top k that ranking pushed out. An item
with no observed training interaction wears a "new" badge. With
"explain" on, clicking a card asks /explain for Integrated Gradients.
``/?user=ID`` loads that user directly.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mmf-rec: retrieve, then rank</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #222; background: #fafafa; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  h2 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
  #status { color: #666; font-size: .85rem; }
  form, fieldset { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; }
  fieldset { border: 1px solid #ddd; padding: .5rem; margin-top: .5rem; }
  label { font-size: .9rem; }
  input[type=number] { width: 6rem; }
  .cards { display: flex; flex-wrap: wrap; gap: .6rem; }
  .card { width: 150px; background: #fff; border: 1px solid #ddd; border-radius: 6px;
          padding: .4rem; font-size: .75rem; cursor: default; position: relative; }
  .card.clickable { cursor: pointer; }
  .card img, .card .noimg { width: 150px; height: 150px; object-fit: contain; display: block;
          background: #eee; border-radius: 4px; }
  .card .noimg { display: flex; align-items: center; justify-content: center; color: #999; }
  .card .rank { position: absolute; top: .5rem; left: .5rem; background: #222; color: #fff;
          border-radius: 3px; padding: 0 .3rem; font-weight: bold; }
  .card .scores { margin: .3rem 0 .15rem; font-variant-numeric: tabular-nums; }
  .card .move { color: #06c; }
  .card.demoted .move { color: #c30; }
  .card .desc { color: #555; }
  .card .badge { position: absolute; top: .5rem; right: .5rem; background: #e8a400; color: #fff;
          border-radius: 3px; padding: 0 .3rem; font-weight: bold; }
  .error { color: #b00; font-weight: bold; }
  #explain-out { font-size: .85rem; background: #fff; border: 1px solid #ddd; padding: .5rem;
          max-width: 640px; display: none; }
  .bar { display: inline-block; height: .7rem; vertical-align: middle; }
  .pos { background: #3a3; } .neg { background: #c33; }
  table { border-collapse: collapse; } td { padding: 0 .4rem; }
</style>
</head>
<body>
<h1>mmf-rec: retrieve, then rank</h1>
<div id="status">loading...</div>
<form id="pick">
  <label>user <select id="users"></select></label>
  <label>or id <input id="user" type="number" min="0"></label>
  <label>k <input id="k" type="number" min="1" value="10"></label>
  <label><input id="exclude" type="checkbox" checked> leave out items clicked before</label>
  <label><input id="explain" type="checkbox"> explain (click a card)</label>
  <button type="submit">Recommend</button>
</form>
<details id="newuser"><summary>New user: give features and history</summary>
  <form id="newform"><fieldset id="newfields"></fieldset>
    <label>history (item ids, most recent first) <input id="history" size="24"></label>
    <button type="submit">Recommend for this new user</button>
  </form>
</details>
<div id="message"></div>
<h2 id="history-title" hidden>Recent history</h2>
<div id="history-cards" class="cards"></div>
<h2 id="recs-title" hidden>Top recommendations</h2>
<div id="rec-cards" class="cards"></div>
<h2 id="demoted-title" hidden>Retrieved but demoted by ranking</h2>
<div id="demoted-note" class="desc"></div>
<div id="demoted-cards" class="cards"></div>
<h2 id="explain-title" hidden>Why</h2>
<div id="explain-out"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let schema = null, health = null, currentUser = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
async function getJSON(url, options) {
  const r = await fetch(url, options);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}
function fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }

function card(item, kind) {
  const c = el("div", "card " + kind);
  c.dataset.item = item.item_id;
  if (item.image_url) {
    const img = el("img");
    img.src = item.image_url; img.alt = "item " + item.item_id; img.loading = "lazy";
    img.onerror = () => img.replaceWith(el("div", "noimg", "no photo"));
    c.appendChild(img);
  } else {
    c.appendChild(el("div", "noimg", "no photo"));
  }
  if (item.rank !== undefined && kind !== "hist") c.appendChild(el("span", "rank", "#" + item.rank));
  if (item.new) {
    const badge = el("span", "badge", "new");
    badge.title = "no training interaction yet: " + (item.source || "found") +
      " from its description, image and attributes";
    c.appendChild(badge);
  }
  const head = el("div", "scores");
  head.appendChild(el("b", null, "item " + item.item_id));
  if (kind !== "hist") {
    head.appendChild(el("br"));
    if (item.ranking_score !== null && item.ranking_score !== undefined)
      head.appendChild(document.createTextNode("click p " + fmt(item.ranking_score, 3) + " · "));
    head.appendChild(document.createTextNode("retrieval " + fmt(item.retrieval_score, 3)));
    head.appendChild(el("br"));
    const move = kind === "demoted"
      ? "retrieval #" + item.retrieval_rank + " → ranked #" + item.rank
      : "retrieval #" + item.retrieval_rank;
    head.appendChild(el("span", "move", move));
  }
  c.appendChild(head);
  c.appendChild(el("div", "desc", item.description));
  if (kind !== "hist" && currentUser !== null && health && health.ranker) {
    c.classList.add("clickable");
    c.onclick = () => { if ($("explain").checked) explain(currentUser, item.item_id); };
  }
  return c;
}
function show(id, items, kind) {
  const box = $(id); box.replaceChildren();
  for (const item of items) box.appendChild(card(item, kind));
}
function message(text, isError) {
  const m = $("message"); m.textContent = text || ""; m.className = isError ? "error" : "";
}

function render(result, ms) {
  $("recs-title").hidden = false;
  $("recs-title").textContent = "Top " + result.items.length + " of " + result.candidates +
    " retrieved" + (result.ranked ? ", ranked by " + result.final_score : " (retrieval order, no ranker)");
  show("rec-cards", result.items, "rec");
  $("demoted-title").hidden = false;
  $("demoted-note").textContent = result.demoted.length
    ? "In retrieval's top " + result.k + " but not in the final top " + result.k + ":"
    : (result.ranked ? "Ranking kept all of retrieval's top " + result.k + "." : "No ranker: nothing demoted.");
  show("demoted-cards", result.demoted, "demoted");
  message((result.new_user ? "new user" : "user " + result.user) + ": " + ms.toFixed(0) + " ms");
}

async function recommendUser(user) {
  currentUser = user;
  $("users").value = String(user);  // the list names who is shown (blank if not listed)
  $("explain-out").style.display = "none"; $("explain-title").hidden = true;
  const k = $("k").value || 10, exclude = $("exclude").checked ? 1 : 0;
  try {
    const info = await getJSON("/users/" + user);
    $("history-title").hidden = false;
    $("history-title").textContent = "Recent history of user " + user +
      (info.external_id ? " (" + info.external_id.slice(0, 12) + "...)" : "") +
      ", " + info.clicked + " items clicked";
    show("history-cards", info.history, "hist");
    const t0 = performance.now();
    const result = await getJSON("/recommend?user=" + user + "&k=" + k + "&exclude_seen=" + exclude);
    render(result, performance.now() - t0);
    history.replaceState(null, "", "?user=" + user);
  } catch (e) {
    message(e.message, true);
    $("rec-cards").replaceChildren(); $("demoted-cards").replaceChildren();
    $("history-cards").replaceChildren();
  }
}

async function recommendNew(event) {
  event.preventDefault();
  currentUser = null;
  const features = {};
  for (const input of $("newfields").querySelectorAll("[data-feature]"))
    if (input.value !== "") features[input.dataset.feature] = Number(input.value);
  const hist = $("history").value.split(/[ ,]+/).filter((x) => x !== "").map(Number);
  const body = { features, history: hist, k: Number($("k").value || 10), exclude_seen: $("exclude").checked };
  try {
    const t0 = performance.now();
    const result = await getJSON("/recommend", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    $("history-title").hidden = false;
    $("history-title").textContent = "History given for the new user";
    const items = await Promise.all(hist.map((i) => getJSON("/items/" + i)));
    show("history-cards", items, "hist");
    render(result, performance.now() - t0);
  } catch (e) { message(e.message, true); }
}

async function explain(user, item) {
  const out = $("explain-out");
  $("explain-title").hidden = false; out.style.display = "block";
  out.textContent = "explaining item " + item + " for user " + user + "...";
  try {
    const e = await getJSON("/explain?user=" + user + "&item=" + item);
    out.replaceChildren();
    out.appendChild(el("div", null, "item " + item + ": logit " + fmt(e.score, 3) + ", baseline " +
      fmt(e.baseline_score, 3) + " (Integrated Gradients, zero baseline; delta " + fmt(e.delta, 4) + ")"));
    const table = el("table");
    const scale = Math.max(...Object.values(e.groups).map(Math.abs), 1e-6);
    for (const [group, value] of Object.entries(e.groups)) {
      const row = el("tr");
      row.appendChild(el("td", null, group));
      row.appendChild(el("td", null, fmt(value, 3)));
      const bar = el("span", "bar " + (value >= 0 ? "pos" : "neg"));
      bar.style.width = (120 * Math.abs(value) / scale).toFixed(0) + "px";
      const cell = el("td"); cell.appendChild(bar); row.appendChild(cell);
      table.appendChild(row);
    }
    out.appendChild(table);
    if (e.top_words.length)
      out.appendChild(el("div", null, "words: " + e.top_words.map((w) => w.word + " " + fmt(w.attribution, 2)).join(", ")));
  } catch (err) { out.textContent = err.message; }
}

async function init() {
  try {
    health = await getJSON("/healthz");
    $("status").textContent = health.items + " items, " + health.users + " users; retrieve " +
      health.k_retrieve + (health.ranker ? ", rank with the ranker (" + health.final_score + ")" : ", no ranker") +
      "; batching: up to " + health.batching.max_batch_size + " requests, " + health.batching.max_wait_ms + " ms";
    $("k").max = health.max_k;
    if (!health.ranker) $("explain").disabled = true;
    const users = await getJSON("/users?count=200");
    for (const u of users.users) {
      const o = el("option", null, "user " + u.user + " (" + u.history + " in history)");
      o.value = u.user; $("users").appendChild(o);
    }
    schema = await getJSON("/schema");
    for (const [name, mean] of Object.entries(schema.dense)) {
      const label = el("label", null, name + " ");
      const input = el("input"); input.type = "number"; input.step = "any";
      input.placeholder = mean.toFixed(2); input.dataset.feature = name;
      label.appendChild(input); $("newfields").appendChild(label);
    }
    for (const [name, cardinality] of Object.entries(schema.categorical)) {
      const label = el("label", null, name + " ");
      const select = el("select"); select.dataset.feature = name;
      select.appendChild(el("option", null, "unknown")).value = "";
      for (let i = 0; i < cardinality; i++) select.appendChild(el("option", null, String(i))).value = i;
      label.appendChild(select); $("newfields").appendChild(label);
    }
  } catch (e) { message("the service did not answer: " + e.message, true); return; }
  $("users").onchange = () => { $("user").value = $("users").value; };
  $("pick").onsubmit = (event) => {
    event.preventDefault();
    const user = $("user").value !== "" ? $("user").value : $("users").value;
    if (user !== "") recommendUser(Number(user));
  };
  $("newform").onsubmit = recommendNew;
  const wanted = new URLSearchParams(location.search).get("user");
  if (wanted !== null) { $("user").value = wanted; recommendUser(Number(wanted)); }
}
init();
</script>
</body>
</html>
"""
