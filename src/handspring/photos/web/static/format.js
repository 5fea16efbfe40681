// How numbers, dates and paths read on the page: in the browser's language.

const numbers = new Intl.NumberFormat();
const days = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const moments = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "long", year: "numeric", hour: "2-digit", minute: "2-digit",
});
const months = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export const count = (n) => numbers.format(n);

export function plural(n, one, many = `${one}s`) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

// Taken times are naive (the camera's clock): read as local time, shown as written.
export function takenDate(iso) {
  return iso ? days.format(new Date(iso)) : "No date";
}

export function takenMoment(iso) {
  return iso ? moments.format(new Date(iso)) : "unknown";
}

// "2021-07" -> "July 2021"
export function monthName(month) {
  const [year, number] = month.split("-").map(Number);
  return months.format(new Date(year, number - 1, 1));
}

export function monthOf(iso) {
  return iso ? iso.slice(0, 7) : null;
}

export function bytes(n) {
  if (n >= 1024 * 1024 * 1024) return `${(n / 1024 ** 3).toFixed(1)} GB`;
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1024))} kB`;
}

export function ago(iso) {
  if (!iso) return null;
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(0, "minute");
}

// A path as text that may wrap only after its separators (never inside a name).
export function wrappablePath(path) {
  const fragment = document.createDocumentFragment();
  const parts = path.split("/");
  parts.forEach((part, i) => {
    const last = i === parts.length - 1;
    fragment.append(document.createTextNode(last ? part : `${part}/`));
    if (!last) fragment.append(document.createElement("wbr"));
  });
  return fragment;
}

export function localToday() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

export function yearsAgo(iso) {
  const years = new Date().getFullYear() - Number(iso.slice(0, 4));
  return years <= 0 ? "This year" : years === 1 ? "1 year ago" : `${years} years ago`;
}
