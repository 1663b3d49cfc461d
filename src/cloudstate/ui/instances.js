// The instance table: one page (100 rows) at a time from GET /v1/instances (ordered by UUID,
// cursor-paged), kept live from the event stream without reloading.
//
// Live updates: each event's ``data.instance`` is the instance after the change, and
// ``data.sequence`` its per-instance number. Events are coalesced per instance (latest
// sequence wins) and applied in small batches; an update whose sequence is not newer than what
// the row shows is stale and ignored. An instance that starts or stops matching the filters is
// inserted in UUID order (if it falls within the page's UUID range) or removed; only the rows
// that changed are touched, never the whole table.
//
// A search by UUID or name prefix is not something the API filters on, so it scans the
// filtered list (1000 a request) and pages the matches here.

import { addresses, el, setText, stateBadge, timeEl, moment } from "./format.js";

export const PAGE_SIZE = 100;
const SCAN_PAGE = 1000;
const FLUSH_MS = 80;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class InstanceTable {
  constructor({ api, table, pageInfo, prev, next, empty, onOpen, onError }) {
    this.api = api;
    this.table = table;
    this.tbody = table.tBodies[0];
    this.pageInfo = pageInfo;
    this.prevButton = prev;
    this.nextButton = next;
    this.empty = empty;
    this.onOpen = onOpen;
    this.onError = onError;
    this.filters = { state: "", account: "", order: "", labels: [], search: "" };
    this.trs = new Map(); // uuid → its <tr>, for the rows on screen
    this.seqs = new Map(); // uuid → the per-instance sequence applied
    this.pending = new Map(); // uuid → {instance, seq}: events not yet applied
    this.selected = null;
    this.generation = 0;
    this.loading = false;
    this.timer = null;
    this.resetPaging();
    prev.addEventListener("click", () => this.previous());
    next.addEventListener("click", () => this.next());
    this.tbody.addEventListener("keydown", (event) => this.onKey(event));
  }

  resetPaging() {
    this.history = []; // earlier pages: {cursor, lower}
    this.page = { cursor: null, lower: null }; // lower: the UUID just below this page
    this.rows = []; // server mode: this page's instances, in UUID order
    this.upper = null; // the highest UUID this page holds (null: the last page, no bound)
    this.nextCursor = null;
    this.overflow = false; // live inserts pushed rows off: re-read before turning the page
    this.matches = null; // search mode: every match, in UUID order
    this.searchPage = 0;
  }

  /** Forget every row (signing out). */
  clear() {
    this.generation += 1;
    this.loading = false;
    this.pending.clear();
    this.seqs.clear();
    this.resetPaging();
    this.render();
  }

  get searching() {
    return this.filters.search !== "";
  }

  /** New filters: back to the first page. */
  setFilters(filters) {
    this.filters = { ...filters, search: filters.search.trim().toLowerCase() };
    this.resetPaging();
    return this.load();
  }

  serverParams() {
    const { state, account, order, labels } = this.filters;
    return { state, account, order, label: labels };
  }

  /** Read the current page (or, searching, every match) afresh. */
  async load() {
    const generation = ++this.generation;
    this.loading = true;
    this.table.setAttribute("aria-busy", "true");
    try {
      if (this.searching) {
        const matches = await this.scan(generation);
        if (generation !== this.generation) return;
        this.matches = matches;
        this.searchPage = Math.min(this.searchPage, Math.max(0, this.pageCount() - 1));
        matches.forEach((instance) => this.seqs.set(instance.uuid, instance.event_seq));
      } else {
        const page = await this.api.get("v1/instances", {
          ...this.serverParams(),
          limit: PAGE_SIZE,
          cursor: this.page.cursor,
        });
        if (generation !== this.generation) return;
        this.rows = page.items;
        this.nextCursor = page.next_cursor;
        this.upper = page.next_cursor && page.items.length ? page.items.at(-1).uuid : null;
        this.overflow = false;
        page.items.forEach((instance) => this.seqs.set(instance.uuid, instance.event_seq));
      }
    } catch (error) {
      if (generation === this.generation) this.onError(error);
      return;
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.table.removeAttribute("aria-busy");
      }
    }
    this.render();
    this.flush();
  }

  async scan(generation) {
    const term = this.filters.search;
    if (UUID.test(term)) {
      try {
        const one = await this.api.get(`v1/instances/${term}`);
        return this.matchesFilters(one) ? [one] : [];
      } catch (error) {
        if (error.status === 404) return [];
        throw error;
      }
    }
    const found = [];
    let cursor = null;
    do {
      const page = await this.api.get("v1/instances", {
        ...this.serverParams(),
        limit: SCAN_PAGE,
        cursor,
      });
      if (generation !== this.generation) return found;
      found.push(...page.items.filter((instance) => this.matchesSearch(instance)));
      cursor = page.next_cursor;
    } while (cursor);
    return found;
  }

  async next() {
    if (this.searching) {
      this.searchPage = Math.min(this.searchPage + 1, this.pageCount() - 1);
      this.render();
      return;
    }
    if (this.overflow) await this.load(); // the cursor is stale: rows were pushed off
    if (!this.nextCursor || !this.rows.length) return;
    this.history.push(this.page);
    this.page = { cursor: this.nextCursor, lower: this.rows.at(-1).uuid };
    await this.load();
    this.focusFirst();
  }

  async previous() {
    if (this.searching) {
      this.searchPage = Math.max(0, this.searchPage - 1);
      this.render();
      return;
    }
    if (!this.history.length) return;
    this.page = this.history.pop();
    await this.load();
    this.focusFirst();
  }

  pageCount() {
    return Math.max(1, Math.ceil((this.matches?.length || 0) / PAGE_SIZE));
  }

  /** The instances on screen, in order. */
  visible() {
    if (!this.searching) return this.rows;
    const start = this.searchPage * PAGE_SIZE;
    return (this.matches || []).slice(start, start + PAGE_SIZE);
  }

  // --- live updates ---------------------------------------------------------------------------

  /** An event from the stream; instance events update the table in the next batch. */
  receive(event) {
    if (!event.instance || event.instanceSeq === null) return;
    const held = this.pending.get(event.instance.uuid);
    if (held && held.seq >= event.instanceSeq) return;
    this.pending.set(event.instance.uuid, { instance: event.instance, seq: event.instanceSeq });
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.loading || !this.pending.size) return; // applied once the page has loaded
    const batch = [...this.pending.values()];
    this.pending.clear();
    let moved = false;
    for (const { instance, seq } of batch) {
      const applied = this.seqs.get(instance.uuid);
      if (applied !== undefined && seq < applied) continue; // stale: the row is newer
      this.seqs.set(instance.uuid, seq);
      moved = this.place({ ...instance, event_seq: seq }) || moved;
    }
    if (moved) this.render();
  }

  /** Put one updated instance where it belongs; true when the set of rows changed. */
  place(instance) {
    const list = this.searching ? this.matches : this.rows;
    if (!list) return false;
    const index = list.findIndex((row) => row.uuid === instance.uuid);
    const fits =
      this.matchesFilters(instance) && (!this.searching || this.matchesSearch(instance));
    if (index >= 0 && fits) {
      list[index] = { ...list[index], ...instance };
      this.updateRow(list[index]);
      return false;
    }
    if (index >= 0) {
      list.splice(index, 1);
      return true;
    }
    if (!fits || (!this.searching && !this.inRange(instance.uuid))) return false;
    list.splice(insertionPoint(list, instance.uuid), 0, instance);
    if (!this.searching && list.length > PAGE_SIZE) {
      list.length = PAGE_SIZE; // the rest belongs to the next page now
      this.upper = list.at(-1).uuid;
      this.overflow = true;
    }
    return true;
  }

  inRange(uuid) {
    const { lower } = this.page;
    return (lower === null || uuid > lower) && (this.upper === null || uuid <= this.upper);
  }

  matchesFilters(instance) {
    const { state, account, order, labels } = this.filters;
    if (state && instance.state !== state) return false;
    if (account && instance.account !== account) return false;
    if (order && instance.order_id !== order) return false;
    return labels.every((pair) => {
      const at = pair.indexOf("=");
      return (instance.labels || {})[pair.slice(0, at)] === pair.slice(at + 1);
    });
  }

  matchesSearch(instance) {
    const term = this.filters.search;
    return instance.uuid.startsWith(term) || (instance.name || "").toLowerCase().startsWith(term);
  }

  /** An instance read afresh elsewhere (the detail panel, an action's answer). */
  update(instance) {
    const held = this.pending.get(instance.uuid);
    if (held && held.seq > instance.event_seq) return;
    this.pending.set(instance.uuid, { instance, seq: instance.event_seq });
    this.flush();
  }

  // --- rendering ------------------------------------------------------------------------------

  render() {
    const rows = this.visible();
    let cursor = this.tbody.firstElementChild;
    const keep = new Set();
    for (const instance of rows) {
      keep.add(instance.uuid);
      let tr = this.trs.get(instance.uuid);
      if (!tr) {
        tr = this.createRow(instance);
        this.trs.set(instance.uuid, tr);
      } else {
        this.updateRow(instance);
      }
      if (tr === cursor) cursor = cursor.nextElementSibling;
      else this.tbody.insertBefore(tr, cursor);
    }
    for (const [uuid, tr] of this.trs) {
      if (!keep.has(uuid)) {
        tr.remove();
        this.trs.delete(uuid);
      }
    }
    this.empty.hidden = rows.length > 0;
    this.renderPager(rows.length);
  }

  renderPager(shown) {
    if (this.searching) {
      const total = this.matches?.length || 0;
      setText(
        this.pageInfo,
        `Page ${this.searchPage + 1} of ${this.pageCount()} · ${total} match${total === 1 ? "" : "es"}`,
      );
      this.prevButton.disabled = this.searchPage === 0;
      this.nextButton.disabled = this.searchPage >= this.pageCount() - 1;
      return;
    }
    const page = this.history.length + 1;
    const first = this.history.length * PAGE_SIZE + (shown ? 1 : 0);
    const last = this.history.length * PAGE_SIZE + shown;
    setText(this.pageInfo, `Page ${page} · instances ${first}–${last}`);
    this.prevButton.disabled = this.history.length === 0;
    this.nextButton.disabled = !this.nextCursor && !this.overflow;
  }

  createRow(instance) {
    const label = instance.name || instance.uuid;
    const open = el(
      "button",
      { type: "button", class: "open", "aria-label": `Show details of ${label}` },
      label,
    );
    open.addEventListener("click", () => this.onOpen(instance.uuid));
    const tr = el(
      "tr",
      { dataset: { uuid: instance.uuid } },
      el("th", { scope: "row", dataset: { col: "name" } }, open),
      el(
        "td",
        { dataset: { col: "uuid" }, class: "mono", title: instance.uuid },
        el("span", { "aria-hidden": "true" }, `${instance.uuid.slice(0, 8)}…`),
        el("span", { class: "visually-hidden" }, instance.uuid),
      ),
      el("td", { dataset: { col: "state" } }, stateBadge(instance.state)),
      el("td", { dataset: { col: "account" } }),
      el("td", { dataset: { col: "addresses" }, class: "mono" }),
      el("td", { dataset: { col: "changed" } }, timeEl(instance.state_changed_at)),
      el("td", { dataset: { col: "operation" } }),
      el("td", { dataset: { col: "error" }, class: "error-text" }),
    );
    tr.classList.toggle("selected", instance.uuid === this.selected);
    this.fill(tr, instance);
    return tr;
  }

  updateRow(instance) {
    const tr = this.trs.get(instance.uuid);
    if (tr) this.fill(tr, instance);
  }

  fill(tr, instance) {
    const cell = (name) => tr.querySelector(`[data-col="${name}"]`);
    const badge = cell("state").firstElementChild;
    if (badge.textContent !== instance.state) {
      badge.className = `state state-${instance.state}`;
      badge.textContent = instance.state;
      tr.classList.remove("changed");
      void tr.offsetWidth; // restart the highlight
      tr.classList.add("changed");
    }
    setText(cell("account"), instance.account);
    setText(cell("addresses"), addresses(instance));
    const time = cell("changed").firstElementChild;
    if (time.dateTime !== instance.state_changed_at) {
      time.dateTime = instance.state_changed_at;
      time.title = instance.state_changed_at;
      setText(time, moment(instance.state_changed_at));
    }
    setText(cell("operation"), instance.operation || "");
    setText(cell("error"), instance.last_error || "");
    const name = instance.name || instance.uuid;
    const open = tr.querySelector("button.open");
    setText(open, name);
    open.setAttribute("aria-label", `Show details of ${name}`);
  }

  select(uuid) {
    this.trs.get(this.selected)?.classList.remove("selected");
    this.trs.get(this.selected)?.querySelector("button.open")?.removeAttribute("aria-current");
    this.selected = uuid;
    const tr = this.trs.get(uuid);
    tr?.classList.add("selected");
    tr?.querySelector("button.open")?.setAttribute("aria-current", "true");
  }

  focusRow(uuid) {
    this.trs.get(uuid)?.querySelector("button.open")?.focus();
  }

  focusFirst() {
    this.tbody.querySelector("button.open")?.focus();
  }

  /** Up and Down move between rows; Home and End to the first and last. */
  onKey(event) {
    const tr = event.target.closest("tr");
    if (!tr || !event.target.matches("button.open")) return;
    const moves = {
      ArrowDown: tr.nextElementSibling,
      ArrowUp: tr.previousElementSibling,
      Home: this.tbody.firstElementChild,
      End: this.tbody.lastElementChild,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    moves[event.key]?.querySelector("button.open")?.focus();
  }
}

function insertionPoint(list, uuid) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (list[middle].uuid < uuid) low = middle + 1;
    else high = middle;
  }
  return low;
}
