// Small DOM and wording helpers shared by the views. No innerHTML anywhere: every value from
// the API goes in as text, so nothing it holds can become markup.

/** ``el("td", {class: "x", dataset: {uuid}}, "text", child)``. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== undefined && child !== null));
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Set text only when it changed (no needless layout work on a live table). */
export function setText(node, text) {
  const value = text ?? "";
  if (node.textContent !== value) node.textContent = value;
}

const pad = (n) => String(n).padStart(2, "0");

/** ``2026-11-24 14:03:07``: local time, 24-hour, always with the date (as the CLI shows it);
 * "" for no time. */
export function moment(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A <time> element showing ``moment`` with the full timestamp as its tooltip. */
export function timeEl(iso) {
  return el("time", { datetime: iso || "", title: iso || "" }, moment(iso));
}

/** "30 s ago", "4 min ago", "2 h ago". */
export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function addresses(instance) {
  return [...(instance.public_addresses || []), ...(instance.private_addresses || [])].join(", ");
}

export function counts(byState) {
  const parts = Object.entries(byState || {}).map(([state, n]) => `${n} ${state}`);
  return parts.join(", ") || "none";
}

const ACTION_OF = { starting: "start", stopping: "stop", rebooting: "reboot", destroying: "destroy" };

/** What an event says in a few words (as ``cloudstate watch`` says it). */
export function describe(event) {
  const data = event.data || {};
  const now = event.instance || {};
  const kind = event.type.replace(/^instance\./, "");
  switch (kind) {
    case "state_changed": {
      const reason = data.reason || now.state_reason;
      return `${data.previous_state} → ${now.state}${reason ? ` (${reason})` : ""}`;
    }
    case "addresses_changed":
      return `addresses: ${addresses(now) || "none"}`;
    case "action_requested":
      return `${data.action} requested`;
    case "action_completed":
      return `${ACTION_OF[data.operation] || data.operation} completed`;
    case "action_failed":
    case "launch_failed":
      return `${kind.replace("_", " ")}: ${data.error || data.reason || ""}`;
    case "failed_over":
      return `failed over ${data.from_account} → ${data.to_account}: ${data.reason || ""}`;
    case "created":
      return "created";
    case "key_available":
      return "key available";
    default:
      break;
  }
  if (event.type === "order.completed") return `completed: ${data.state} (${counts(data.instances)})`;
  if (event.type === "order.state_changed") {
    return `${data.previous_state} → ${data.state} (${counts(data.instances)})`;
  }
  return event.type;
}

/** The instance states, in the order the dashboard lists them. */
export const STATES = [
  "new",
  "pending",
  "running",
  "stopping",
  "stopped",
  "rebooting",
  "shutting_down",
  "terminated",
  "error",
  "unknown",
];

export function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state || "");
}
