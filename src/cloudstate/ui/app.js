// The dashboard: sign-in, the two views (instances with a detail panel; overview), and one
// live event stream feeding all of them.
//
// Start-up order matters for live updates: read the newest event's sequence first, open the
// stream from there, then read the table. Every change after that sequence arrives on the
// stream; those the table already reflects are recognised by their per-instance sequence.

import { Api, ApiError, refusal, session } from "./api.js";
import { DetailPanel } from "./detail.js";
import { STATES, el } from "./format.js";
import { InstanceTable } from "./instances.js";
import { Overview } from "./overview.js";
import { EventStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const TYPING_MS = 300;
const FADE_MS = 4000; // a good word is read at once; an error stays until the next one

class Dashboard {
  constructor() {
    this.api = null;
    this.stream = null;
    this.view = null;
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn($("token").value.trim());
    });
    $("sign-out").addEventListener("click", () => this.signOut("Signed out."));
    for (const button of $("nav").querySelectorAll("button[data-view]")) {
      button.addEventListener("click", () => this.showView(button.dataset.view));
    }
    window.addEventListener("hashchange", () => this.api && this.showView(viewOfHash()));
    const states = $("filter-state");
    for (const state of STATES) states.append(el("option", { value: state }, state));
  }

  async start() {
    const saved = session.token;
    if (saved) await this.signIn(saved);
    else $("token").focus();
  }

  // --- session --------------------------------------------------------------------------------

  async signIn(token) {
    const error = $("signin-error");
    error.textContent = "";
    if (!token) {
      error.textContent = "Enter a token.";
      $("token").focus();
      return;
    }
    const api = new Api(token);
    let accounts;
    try {
      accounts = await api.get("v1/accounts"); // proves the token and its read scope
    } catch (failure) {
      session.token = null;
      error.textContent =
        failure instanceof ApiError ? refusal(failure) : `The API did not answer: ${failure.message}`;
      $("token").select();
      return;
    }
    session.token = token;
    $("token").value = "";
    api.onUnauthorized = (problem) =>
      this.signOut(`Signed out: the API no longer accepts this token (${problem.detail || problem.title}).`);
    this.api = api;
    if (this.table) this.rebind(api);
    else this.build();
    this.fillAccounts(accounts);
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("sign-out").hidden = false;
    $("connection").hidden = false;
    this.announce("Signed in.");
    this.showView(viewOfHash());
    await this.follow();
  }

  signOut(message) {
    if (!this.api) return;
    this.stream?.stop();
    this.overview?.hide();
    this.detail?.close();
    this.table?.clear(); // nothing of the fleet stays on screen
    this.api = null;
    session.token = null;
    for (const id of ["nav", "sign-out", "connection", "instances-view", "overview-view"]) {
      $(id).hidden = true;
    }
    $("signin").hidden = false;
    $("signin-error").textContent = message === "Signed out." ? "" : message;
    this.announce(message);
    $("token").focus();
  }

  /** The views, made once; a later sign-in hands them its API (``rebind``). */
  build() {
    const api = this.api;
    const announce = (message, bad) => this.announce(message, bad);
    this.table = new InstanceTable({
      api,
      table: $("instances"),
      pageInfo: $("page-info"),
      prev: $("page-prev"),
      next: $("page-next"),
      empty: $("instances-empty"),
      onOpen: (uuid) => this.openDetail(uuid),
      onError: (error) => announce(`Could not list instances: ${refusal(error)}`, true),
    });
    this.detail = new DetailPanel({
      api,
      root: $("detail"),
      dialog: $("confirm-destroy"),
      announce,
      onInstance: (instance) => this.table.update(instance),
      onClose: (uuid) => {
        this.table.select(null);
        $("instances-view").classList.remove("with-detail");
        this.table.focusRow(uuid);
      },
    });
    this.overview = new Overview({
      api,
      root: $("overview-view"),
      announce,
      onFilter: (filters) => this.filterBy(filters),
    });
    this.stream = new EventStream(api, {
      onEvent: (event) => {
        this.table.receive(event);
        this.detail.receive(event);
        this.overview.receive(event);
      },
      onState: (state) => this.connection(state),
      onGone: () => this.follow(),
    });
    this.bindFilters();
  }

  rebind(api) {
    for (const part of [this.table, this.detail, this.overview, this.stream]) part.api = api;
  }

  /** From the newest event on: the stream first, then the current state. */
  async follow() {
    try {
      const { last_seq: last } = await this.api.get("v1/events", { limit: 1 });
      this.stream.start(last);
      await this.table.setFilters(this.readFilters() ?? this.table.filters);
      if (this.detail.isOpen) await this.detail.open(this.detail.uuid);
    } catch (error) {
      this.announce(`Could not read the fleet: ${refusal(error)}`, true);
    }
  }

  connection(state) {
    const node = $("connection");
    const words = { live: "Live", reconnecting: "Reconnecting…", stopped: "Not live" };
    node.textContent = words[state] || state;
    node.className = `connection connection-${state}`;
  }

  /** A message in the live region; news fades after a while, errors stay until the next. */
  announce(message, bad = false) {
    const node = $("status");
    node.textContent = message;
    node.classList.toggle("error", bad);
    clearTimeout(this.fade);
    if (!bad) this.fade = setTimeout(() => (node.textContent = ""), FADE_MS);
  }

  // --- views ----------------------------------------------------------------------------------

  showView(name) {
    const view = name === "overview" ? "overview" : "instances";
    this.view = view;
    $("instances-view").hidden = view !== "instances";
    $("overview-view").hidden = view !== "overview";
    for (const button of $("nav").querySelectorAll("button[data-view]")) {
      if (button.dataset.view === view) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    if (view === "overview") this.overview.show();
    else this.overview.hide();
  }

  openDetail(uuid) {
    $("instances-view").classList.add("with-detail");
    this.table.select(uuid);
    this.detail.open(uuid);
  }

  // --- filters --------------------------------------------------------------------------------

  fillAccounts(accounts) {
    const select = $("filter-account");
    select.replaceChildren(el("option", { value: "" }, "any"));
    for (const account of accounts) select.append(el("option", { value: account.name }, account.name));
  }

  bindFilters() {
    const form = $("filters");
    let typing = null;
    const apply = () => {
      clearTimeout(typing);
      const filters = this.readFilters();
      if (filters) this.table.setFilters(filters);
    };
    form.onsubmit = (event) => {
      event.preventDefault();
      apply();
    };
    form.onchange = (event) => {
      if (event.target.tagName === "SELECT") apply();
    };
    form.oninput = (event) => {
      if (event.target.tagName === "SELECT") return;
      clearTimeout(typing);
      typing = setTimeout(apply, TYPING_MS);
    };
    form.onreset = () => setTimeout(apply, 0); // after the form has cleared itself
  }

  /** The form's filters; null (with the field marked invalid) when one cannot be sent. */
  readFilters() {
    const order = $("filter-order");
    const label = $("filter-label");
    const labels = label.value
      .split(",")
      .map((pair) => pair.trim())
      .filter(Boolean);
    order.setCustomValidity(order.value.trim() && !UUID.test(order.value.trim()) ? "an order id is a UUID" : "");
    label.setCustomValidity(labels.every((pair) => pair.indexOf("=") > 0) ? "" : "each label is key=value");
    for (const field of [order, label]) field.setAttribute("aria-invalid", String(!field.checkValidity()));
    if (!order.checkValidity() || !label.checkValidity()) {
      this.announce(order.validationMessage || label.validationMessage, true);
      return null;
    }
    return {
      search: $("filter-search").value,
      state: $("filter-state").value,
      account: $("filter-account").value,
      order: order.value.trim().toLowerCase(),
      labels,
    };
  }

  /** The overview's "list them": the instances of one account in one state. */
  filterBy({ account = "", state = "" }) {
    for (const id of ["filter-search", "filter-order", "filter-label"]) $(id).value = "";
    const accounts = $("filter-account");
    if (account && ![...accounts.options].some((option) => option.value === account)) {
      accounts.append(el("option", { value: account }, account));
    }
    accounts.value = account;
    $("filter-state").value = state;
    this.showView("instances");
    const filters = this.readFilters();
    if (filters) this.table.setFilters(filters);
  }
}

function viewOfHash() {
  return location.hash === "#overview" ? "overview" : "instances";
}

new Dashboard().start();
