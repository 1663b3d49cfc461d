// The overview: instances by state per account (from /metrics, counted by the database),
// orders in progress, delivery health per subscription, realm availability, worker heartbeats.
// Re-read when shown, every few seconds while shown, and soon after events arrive.

import { refusal } from "./api.js";
import { STATES, ago, counts, el, stateBadge, svg, timeEl } from "./format.js";

const REFRESH_MS = 5000;
const SOON_MS = 1000;
const IN_PROGRESS = ["accepted", "launching", "rolling_back"];
const COUNT_LIMIT = 1000; // delivery rows counted per status; more shows as "1000+"

export class Overview {
  constructor({ api, root, onFilter, announce }) {
    this.api = api;
    this.root = root;
    this.onFilter = onFilter;
    this.announce = announce;
    this.active = false;
    this.timer = null;
    this.soon = null;
    this.running = null;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.$("overview-refresh").addEventListener("click", () => this.refresh());
  }

  show() {
    this.active = true;
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    this.active = false;
    clearInterval(this.timer);
    clearTimeout(this.soon);
  }

  /** Something changed: refresh within a second (many events, one refresh). */
  receive() {
    if (!this.active || this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      this.refresh();
    }, SOON_MS);
  }

  async refresh() {
    if (this.running) return this.running; // one refresh at a time
    this.running = this.readAll().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  async readAll() {
    const parts = [
      ["states", () => this.states()],
      ["orders", () => this.orders()],
      ["deliveries", () => this.deliveries()],
      ["realms", () => this.realms()],
      ["workers", () => this.workers()],
    ];
    await Promise.all(
      parts.map(async ([name, read]) => {
        const target = this.$(`overview-${name}`);
        try {
          target.replaceChildren(...[await read()].flat().filter(Boolean));
        } catch (error) {
          target.replaceChildren(el("p", { class: "error" }, refusal(error)));
        }
      }),
    );
    const stamp = this.$("overview-updated");
    stamp.replaceChildren("Updated ", timeEl(new Date().toISOString()));
  }

  // --- instances by state ---------------------------------------------------------------------

  async states() {
    const byAccount = instanceCounts(await this.api.text("metrics"));
    const accounts = [...byAccount.keys()].sort();
    if (!accounts.length) return el("p", { class: "muted" }, "No instances yet.");
    const present = STATES.filter((state) => accounts.some((a) => byAccount.get(a)[state]));
    return el(
      "div",
      { class: "states" },
      el("figure", {}, chart(accounts, byAccount, present), legend(present)),
      this.countTable(accounts, byAccount, present),
    );
  }

  countTable(accounts, byAccount, present) {
    const head = el(
      "tr",
      {},
      el("th", { scope: "col" }, "Account"),
      present.map((state) => el("th", { scope: "col" }, state)),
      el("th", { scope: "col" }, "Total"),
    );
    const body = accounts.map((account) => {
      const row = byAccount.get(account);
      return el(
        "tr",
        { dataset: { account } },
        el("th", { scope: "row" }, account),
        present.map((state) => {
          const n = row[state] || 0;
          if (!n) return el("td", { dataset: { state } }, "0");
          const show = el(
            "button",
            { type: "button", class: "link", "aria-label": `${n} ${state} in ${account}: list them` },
            String(n),
          );
          show.addEventListener("click", () => this.onFilter({ account, state }));
          return el("td", { dataset: { state } }, show);
        }),
        el("td", {}, String(total(row))),
      );
    });
    return el(
      "table",
      { class: "compact counts" },
      el("caption", {}, "Instances by account and state"),
      el("thead", {}, head),
      el("tbody", {}, body),
    );
  }

  // --- orders ---------------------------------------------------------------------------------

  async orders() {
    const page = await this.api.get("v1/orders", { state: IN_PROGRESS, limit: 20 });
    if (!page.items.length) return el("p", { class: "muted" }, "No order in progress.");
    const rows = page.items.map((order) =>
      el(
        "tr",
        { dataset: { order: order.id } },
        el("td", { class: "mono", title: order.id }, `${order.id.slice(0, 8)}…`),
        el("td", {}, order.state),
        el("td", {}, counts(order.counts)),
        el("td", {}, timeEl(order.created_at)),
        el("td", {}, order.launch_deadline ? timeEl(order.launch_deadline) : ""),
      ),
    );
    return [
      table(["Order", "State", "Instances", "Accepted", "Deadline"], rows, "Orders in progress"),
      page.next_cursor ? el("p", { class: "muted" }, "The 20 newest are shown.") : null,
    ];
  }

  // --- deliveries -----------------------------------------------------------------------------

  async deliveries() {
    const subscriptions = await this.api.get("v1/subscriptions");
    if (!subscriptions.length) return el("p", { class: "muted" }, "No subscriptions.");
    const rows = await Promise.all(subscriptions.map((s) => this.deliveryRow(s)));
    return table(["Subscription", "Enabled", "Pending", "Failing", "Dead"], rows, "Delivery health per subscription");
  }

  async deliveryRow(subscription) {
    const path = `v1/subscriptions/${subscription.id}/deliveries`;
    const [waiting, dead] = await Promise.all([
      this.api.get(path, { status: ["pending", "delivering"], limit: COUNT_LIMIT }),
      this.api.get(path, { status: "dead", limit: COUNT_LIMIT }),
    ]);
    const failing = waiting.items.filter((row) => row.attempts > 0).length;
    const many = (page, n) => (page.next_after === null ? String(n) : `${n}+`);
    const cell = (name, text, bad) => el("td", { class: bad ? "bad" : null, dataset: { count: name } }, text);
    return el(
      "tr",
      { dataset: { subscription: subscription.id } },
      el("th", { scope: "row", class: "wrap" }, subscription.description || subscription.url || subscription.id),
      el("td", {}, subscription.enabled ? "yes" : `no: ${subscription.disabled_reason}`),
      cell("pending", many(waiting, waiting.items.length), false),
      cell("failing", String(failing), failing > 0),
      cell("dead", many(dead, dead.items.length), dead.items.length > 0),
    );
  }

  // --- realms and workers ---------------------------------------------------------------------

  async realms() {
    const realms = await this.api.get("v1/realms");
    if (!realms.length) return el("p", { class: "muted" }, "No realm observed yet.");
    const rows = realms.map((realm) =>
      el(
        "tr",
        {},
        el("td", {}, realm.account),
        el("td", {}, realm.name),
        el("td", {}, el("span", { class: realm.available ? "ok" : "bad" }, realm.available ? "available" : "unavailable")),
        el("td", {}, realm.reason),
        el("td", {}, timeEl(realm.updated_at)),
      ),
    );
    return table(["Account", "Realm", "Availability", "Reason", "Observed"], rows, "Realm availability");
  }

  async workers() {
    const workers = await this.api.get("v1/workers");
    if (!workers.length) return el("p", { class: "bad" }, "No worker is running.");
    const now = Date.now();
    const rows = workers.map((worker) =>
      el(
        "tr",
        { dataset: { worker: worker.id } },
        el("td", { class: "mono" }, worker.id),
        el("td", {}, `${worker.host} (pid ${worker.pid})`),
        el("td", {}, el("span", { class: worker.alive ? "ok" : "bad" }, worker.alive ? "alive" : "silent")),
        el("td", { title: worker.heartbeat_at }, ago(worker.heartbeat_at, now)),
        el("td", {}, holds(worker.holds)),
      ),
    );
    return table(["Worker", "Host", "Status", "Last heartbeat", "Holds"], rows, "Worker heartbeats");
  }
}

/** ``cloudstate_instances{account="a",state="running"} 3.0`` lines → account → state → n. */
export function instanceCounts(text) {
  const byAccount = new Map();
  for (const line of text.split("\n")) {
    const match = /^cloudstate_instances\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of match[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[name] = value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const n = Math.round(Number(match[2]));
    if (!labels.account || !labels.state || !n) continue;
    if (!byAccount.has(labels.account)) byAccount.set(labels.account, {});
    byAccount.get(labels.account)[labels.state] = n;
  }
  return byAccount;
}

function total(row) {
  return Object.values(row).reduce((sum, n) => sum + n, 0);
}

/** One horizontal stacked bar per account, its length the account's share of the largest. */
function chart(accounts, byAccount, present) {
  const labelWidth = 110;
  const barWidth = 320;
  const rowHeight = 26;
  const height = accounts.length * rowHeight + 4;
  const largest = Math.max(...accounts.map((a) => total(byAccount.get(a))));
  const summary = accounts
    .map((a) => `${a}: ${present.filter((s) => byAccount.get(a)[s]).map((s) => `${byAccount.get(a)[s]} ${s}`).join(", ")}`)
    .join("; ");
  const image = svg("svg", {
    viewBox: `0 0 ${labelWidth + barWidth + 50} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": `Instances by state per account. ${summary}`,
  });
  accounts.forEach((account, index) => {
    const row = byAccount.get(account);
    const y = index * rowHeight + 4;
    const name = svg("text", { x: labelWidth - 8, y: y + 15, "text-anchor": "end", class: "chart-label" });
    name.textContent = account;
    image.append(name);
    let x = labelWidth;
    for (const state of present) {
      const n = row[state] || 0;
      if (!n) continue;
      const width = Math.max(2, (n / largest) * barWidth);
      const bar = svg("rect", { x, y, width, height: rowHeight - 8, class: `fill-${state}` });
      const tip = svg("title");
      tip.textContent = `${account}: ${n} ${state}`;
      bar.append(tip);
      image.append(bar);
      x += width;
    }
    const sum = svg("text", { x: x + 6, y: y + 15, class: "chart-label" });
    sum.textContent = String(total(row));
    image.append(sum);
  });
  return image;
}

function legend(present) {
  return el(
    "ul",
    { class: "legend", "aria-hidden": "true" },
    present.map((state) => el("li", {}, el("span", { class: `swatch fill-${state}` }), stateBadge(state))),
  );
}

function table(headings, rows, caption) {
  return el(
    "table",
    { class: "compact" },
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows),
  );
}

function holds(held) {
  const parts = [];
  if (held?.accounts?.length) parts.push(`accounts ${held.accounts.join(", ")}`);
  if (held?.operations) parts.push(`${held.operations} operations`);
  if (held?.deliveries) parts.push(`${held.deliveries} deliveries`);
  return parts.join(" · ") || "nothing";
}
