// The detail panel of one instance: its fields, the actions its state allows, the timeline of
// its events (live), and its webhook deliveries per subscription.

import { ApiError, refusal } from "./api.js";
import { addresses, describe, el, setText, stateBadge, timeEl } from "./format.js";
import { normalize } from "./stream.js";

const ACTIONS = ["start", "stop", "reboot", "destroy"];
const EVENT_PAGE = 1000;
const MAX_EVENT_PAGES = 5;
const DELIVERY_PAGE = 1000;
const MAX_DELIVERY_PAGES = 5;
const REFETCH_MS = 250;
const DELIVERIES_MS = 5000; // deliveries change without events (retries, dead letters)
const DELIVERIES_SOON_MS = 1000;

export class DetailPanel {
  constructor({ api, root, dialog, announce, onInstance, onClose }) {
    this.api = api;
    this.root = root;
    this.dialog = dialog;
    this.announce = announce;
    this.onInstance = onInstance;
    this.onClose = onClose;
    this.uuid = null;
    this.instance = null;
    this.seq = 0; // the per-instance sequence shown
    this.timelineSeqs = new Set();
    this.busy = false;
    this.refetchTimer = null;
    this.deliveriesTimer = null;
    this.deliveriesSoon = null;
    this.readingDeliveries = null;
    this.readingFor = null;
    this.firstSeq = null;
    this.lastSeq = null;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.$("detail-close").addEventListener("click", () => this.close());
    this.$("deliveries-refresh").addEventListener("click", () => this.refreshDeliveries());
    root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !dialog.open) this.close();
    });
    for (const action of ACTIONS) {
      this.button(action).addEventListener("click", () => this.act(action));
    }
  }

  button(action) {
    return this.root.querySelector(`button[data-action="${action}"]`);
  }

  get isOpen() {
    return this.uuid !== null;
  }

  async open(uuid) {
    this.uuid = uuid;
    this.instance = null;
    this.seq = 0;
    this.timelineSeqs = new Set();
    this.firstSeq = null; // the instance's first and last event: bounds its delivery scan
    this.lastSeq = null;
    this.root.hidden = false;
    this.$("timeline").replaceChildren();
    this.$("deliveries").replaceChildren(el("p", { class: "muted" }, "Loading…"));
    setText(this.$("detail-title"), "Loading…");
    this.renderActions(null);
    this.$("detail-title").focus();
    clearInterval(this.deliveriesTimer);
    try {
      await this.refetch();
      await this.loadTimeline();
      await this.refreshDeliveries();
    } catch (error) {
      if (uuid === this.uuid) this.announce(refusal(error), true);
    }
    if (uuid === this.uuid) {
      this.deliveriesTimer = setInterval(() => this.refreshDeliveries(), DELIVERIES_MS);
    }
  }

  close() {
    if (!this.isOpen) return;
    const uuid = this.uuid;
    this.uuid = null;
    clearInterval(this.deliveriesTimer);
    clearTimeout(this.deliveriesSoon);
    clearTimeout(this.refetchTimer);
    this.root.hidden = true;
    this.onClose(uuid);
  }

  /** Read the instance afresh: ``allowed_actions`` is not in events. */
  async refetch() {
    const uuid = this.uuid;
    const instance = await this.api.get(`v1/instances/${uuid}`);
    if (uuid !== this.uuid) return;
    this.show(instance);
    this.onInstance(instance);
  }

  show(instance) {
    if (instance.event_seq < this.seq) return; // older than what is shown
    this.seq = instance.event_seq;
    this.instance = { ...this.instance, ...instance };
    const shown = this.instance;
    setText(this.$("detail-title"), shown.name || shown.uuid);
    this.renderFields(shown);
    this.renderActions(shown.allowed_actions);
  }

  renderFields(instance) {
    const main = [
      ["UUID", el("code", {}, instance.uuid)],
      ["State", [stateBadge(instance.state), instance.state_reason ? ` (${instance.state_reason})` : ""]],
      ["Operation", instance.operation || "none"],
      ["Account", instance.account],
      ["Addresses", addresses(instance) || "none"],
      ["State changed", timeEl(instance.state_changed_at)],
      ["Labels", labels(instance.labels)],
      ["Last error", instance.last_error ? el("span", { class: "error" }, instance.last_error) : undefined],
    ];
    const more = [
      ["Order", instance.order_id ? el("code", {}, instance.order_id) : "none"],
      ["Provider id", instance.provider_id || "not yet"],
      ["Image", instance.image],
      ["Hardware", hardware(instance)],
      ["Realm", instance.realm === undefined ? undefined : instance.realm || "not chosen"],
      ["Key fingerprint", instance.key_fingerprint ? el("code", {}, instance.key_fingerprint) : "none"],
      ["Launched", instance.launched_at ? timeEl(instance.launched_at) : "not yet"],
      ["Last seen", instance.last_seen_at ? timeEl(instance.last_seen_at) : "not yet"],
    ];
    const open = this.$("detail-more").open;
    this.$("detail-fields").replaceChildren(...pairs(main));
    this.$("detail-more-fields").replaceChildren(...pairs(more));
    this.$("detail-more").open = open;
  }

  /** Each action's button, enabled only when the state allows it (``null``: not known yet). */
  renderActions(allowed) {
    for (const action of ACTIONS) {
      const button = this.button(action);
      const ok = Boolean(allowed?.includes(action));
      button.disabled = this.busy || !ok;
      button.title = ok || !allowed ? "" : "the instance's state does not allow it";
    }
    let words = "Checking what the state allows…";
    if (allowed) words = allowed.length ? `Allowed now: ${allowed.join(", ")}.` : "No action is allowed now.";
    setText(this.$("allowed"), words);
  }

  /** An event from the stream: the timeline grows, the fields follow, the actions are re-read. */
  receive(event) {
    if (!this.isOpen || event.subject !== this.uuid || !event.instance) return;
    this.addToTimeline(event, true);
    if (event.instanceSeq > this.seq) {
      // the state moved: what it allows is unknown until the instance is re-read
      this.show({ ...event.instance, event_seq: event.instanceSeq, allowed_actions: null });
    }
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(() => this.refetch().catch(() => {}), REFETCH_MS);
    clearTimeout(this.deliveriesSoon);
    this.deliveriesSoon = setTimeout(() => this.refreshDeliveries(), DELIVERIES_SOON_MS);
  }

  async act(action) {
    const instance = this.instance;
    if (!instance) return;
    const name = instance.name || instance.uuid;
    if (action === "destroy" && !(await this.confirmDestroy(instance))) return;
    this.busy = true;
    this.renderActions(instance.allowed_actions);
    try {
      const answer =
        action === "destroy"
          ? await this.api.delete(`v1/instances/${instance.uuid}`)
          : await this.api.post(`v1/instances/${instance.uuid}/actions`, { action });
      this.announce(`${action} accepted for ${name}.`);
      this.busy = false;
      if (answer.instance.uuid === this.uuid) this.show(answer.instance);
      this.onInstance(answer.instance);
    } catch (error) {
      this.busy = false;
      const allowed = error.problem?.allowed_actions;
      const words = error instanceof ApiError ? refusal(error) : String(error);
      this.announce(`${action} refused for ${name}: ${words}`, true);
      if (allowed && this.instance) this.instance.allowed_actions = allowed;
    } finally {
      this.renderActions(this.instance?.allowed_actions ?? null);
    }
  }

  confirmDestroy(instance) {
    const dialog = this.dialog;
    setText(dialog.querySelector("#confirm-name"), instance.name || instance.uuid);
    setText(dialog.querySelector("#confirm-uuid"), instance.uuid);
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "destroy"), {
        once: true,
      });
    });
  }

  // --- timeline -------------------------------------------------------------------------------

  async loadTimeline() {
    const uuid = this.uuid;
    let after = 0;
    const events = [];
    for (let page = 0; page < MAX_EVENT_PAGES; page += 1) {
      const body = await this.api.get("v1/events", { instance: uuid, after, limit: EVENT_PAGE });
      if (uuid !== this.uuid) return;
      events.push(...body.items.map(normalize));
      if (body.items.length < EVENT_PAGE) break;
      after = body.next_after;
    }
    this.firstSeq = events.length ? events[0].seq : null;
    for (const event of events) this.addToTimeline(event, false);
  }

  addToTimeline(event, live) {
    if (this.timelineSeqs.has(event.seq)) return;
    this.timelineSeqs.add(event.seq);
    this.firstSeq ??= event.seq;
    this.lastSeq = Math.max(this.lastSeq || 0, event.seq);
    const item = el(
      "li",
      { dataset: { seq: event.seq, type: event.type }, class: live ? "new" : null },
      el("span", { class: "seq" }, `#${event.seq}`),
      " ",
      timeEl(event.time),
      " ",
      el("span", { class: "type" }, event.type.replace(/^instance\./, "")),
      " ",
      el("span", { class: "what" }, describe(event)),
    );
    // newest first: find the first item with a lower seq and go before it
    const list = this.$("timeline");
    const later = [...list.children].find((li) => Number(li.dataset.seq) < event.seq);
    list.insertBefore(item, later || null);
  }

  // --- deliveries -----------------------------------------------------------------------------

  /** One reading at a time (per instance); an error is shown in place of the list. */
  refreshDeliveries() {
    if (!this.isOpen) return Promise.resolve();
    const uuid = this.uuid;
    if (this.readingDeliveries && this.readingFor === uuid) return this.readingDeliveries;
    const before = this.readingDeliveries || Promise.resolve();
    const reading = before
      .then(() => this.loadDeliveries())
      .catch((error) => {
        if (uuid !== this.uuid) return;
        this.$("deliveries").replaceChildren(el("p", { class: "error" }, refusal(error)));
      })
      .finally(() => {
        if (this.readingDeliveries === reading) this.readingDeliveries = null;
      });
    this.readingFor = uuid;
    this.readingDeliveries = reading;
    return reading;
  }

  /**
   * Each subscription's deliveries of this instance's events. The delivery log has no
   * per-instance filter, so each log is read from this instance's first event on (the log is in
   * event order) and filtered by subject here, up to a bound.
   */
  async loadDeliveries() {
    const uuid = this.uuid;
    const target = this.$("deliveries");
    const subscriptions = await this.api.get("v1/subscriptions");
    if (uuid !== this.uuid) return;
    if (!subscriptions.length) {
      target.replaceChildren(el("p", { class: "muted" }, "No subscriptions."));
      return;
    }
    const sections = [];
    for (const subscription of subscriptions) {
      const { rows, complete } = await this.deliveriesOf(subscription.id, uuid);
      if (uuid !== this.uuid) return;
      sections.push(deliverySection(subscription, rows, complete));
    }
    target.replaceChildren(...sections);
  }

  async deliveriesOf(subscriptionId, uuid) {
    const rows = [];
    let after = this.firstSeq ? this.firstSeq - 1 : 0;
    for (let page = 0; page < MAX_DELIVERY_PAGES; page += 1) {
      const body = await this.api.get(`v1/subscriptions/${subscriptionId}/deliveries`, {
        after,
        limit: DELIVERY_PAGE,
      });
      rows.push(...body.items.filter((row) => row.subject === uuid));
      const pastLast = this.lastSeq && body.items.some((row) => row.event_seq > this.lastSeq);
      if (body.next_after === null || pastLast) return { rows, complete: true };
      after = body.next_after;
    }
    return { rows, complete: false };
  }
}

function deliverySection(subscription, rows, complete) {
  const title = subscription.description || subscription.url || subscription.id;
  const heading = el(
    "h5",
    {},
    title,
    subscription.enabled ? "" : el("span", { class: "badge bad" }, " disabled"),
  );
  if (!rows.length) {
    const none = el("p", { class: "muted" }, "No deliveries of this instance's events.");
    return el("section", { class: "subscription", dataset: { subscription: subscription.id } }, heading, none);
  }
  const table = el(
    "table",
    { class: "compact" },
    el("caption", { class: "visually-hidden" }, `Deliveries to ${title}`),
    el(
      "thead",
      {},
      el("tr", {}, ...["Event", "Status", "Tries", "Last answer"].map((h) => el("th", { scope: "col" }, h))),
    ),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          { dataset: { status: row.status } },
          el("td", {}, `#${row.event_seq} ${row.event_type.replace(/^instance\./, "")}`),
          el("td", {}, el("span", { class: `delivery delivery-${row.status}` }, row.status)),
          el("td", {}, String(row.attempts)),
          el(
            "td",
            { class: "wrap" },
            row.last_error || (row.last_status_code ? `HTTP ${row.last_status_code}` : ""),
          ),
        ),
      ),
    ),
  );
  const note = complete ? null : el("p", { class: "muted" }, "Only the first part of the log was read.");
  return el("section", { class: "subscription", dataset: { subscription: subscription.id } }, heading, table, note);
}

function pairs(rows) {
  return rows
    .filter(([, value]) => value !== undefined)
    .flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]);
}

function hardware(instance) {
  const parts = Object.entries(instance.hardware || {}).map(([k, v]) => `${k} ${v}`);
  if (!instance.hardware_profile) return undefined;
  return parts.length ? `${instance.hardware_profile} (${parts.join(", ")})` : instance.hardware_profile;
}

function labels(values) {
  const pairs = Object.entries(values || {});
  if (!pairs.length) return "none";
  return pairs.map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`));
}
