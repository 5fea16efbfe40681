// The duplicates page: groups of photos that look nearly the same, each photo with its
// size, pixels, date and path, so a person can choose what to keep. It only shows them.

import { getJson } from "./api.js";
import * as fmt from "./format.js";
import { element, photoTile, Thumbnails } from "./tiles.js";

const $ = (id) => document.getElementById(id);

// Whether the first photo (the server sorts by pixels, then bytes) is larger than the rest.
function largest(photos) {
  const [first, second] = photos.map((p) => [(p.width || 0) * (p.height || 0), p.size]);
  return first[0] > second[0] || (first[0] === second[0] && first[1] > second[1]);
}

export class DuplicatesView {
  // on: {open(list, index), similar(photo), failed(error)}
  constructor(on) {
    this.on = on;
    this.thumbnails = new Thumbnails();
    this.generation = 0;
  }

  async show(state) {
    this.generation += 1;
    const generation = this.generation;
    this.thumbnails.clear();
    const section = $("duplicates");
    const groups = $("duplicate-groups");
    groups.replaceChildren();
    section.dataset.state = "loading";
    const params = new URLSearchParams();
    if (state.threshold !== null) params.set("threshold", state.threshold);
    if (state.filters.folder) params.set("folder", state.filters.folder);
    $("duplicates-status").textContent = "Comparing every photo with every other…";
    try {
      const found = await getJson(`/api/duplicates?${params}`);
      if (generation !== this.generation) return;
      const photos = found.groups.reduce((n, g) => n + g.photos.length, 0);
      $("duplicates-status").textContent = found.groups.length
        ? `${fmt.plural(found.groups.length, "group")} of near-duplicates, ${fmt.plural(photos, "photo")}, among ${fmt.plural(found.photosCompared, "photo")} compared.`
        : `No near-duplicates among ${fmt.plural(found.photosCompared, "photo")} at similarity ${found.threshold}.`;
      groups.replaceChildren(...found.groups.map((group, i) => this.#group(group, i)));
      section.dataset.state = "done";
    } catch (error) {
      if (generation !== this.generation) return;
      $("duplicates-status").textContent = "";
      section.dataset.state = "error";
      this.on.failed(error);
    }
  }

  #group(group, number) {
    const list = { items: group.photos, total: group.photos.length, hasMore: false, more: async () => false };
    const cards = group.photos.map((photo, index) => {
      const tile = photoTile(photo, {
        thumbnails: this.thumbnails,
        onOpen: () => this.on.open(list, index),
        onSimilar: this.on.similar,
      });
      tile.classList.add("duplicate");
      const facts = element("dl", { className: "facts" });
      const fact = (label, value) => {
        const dd = element("dd");
        dd.append(value);
        facts.append(element("dt", { textContent: label }), dd);
      };
      fact("Size", fmt.bytes(photo.size));
      fact("Pixels", photo.width ? `${photo.width} × ${photo.height}` : "unknown");
      fact("Taken", fmt.takenDate(photo.takenAt));
      const path = element("span", { className: "path" });
      path.append(fmt.wrappablePath(photo.path));
      fact("Path", path);
      tile.append(facts);
      if (index === 0 && largest(group.photos)) {
        tile.append(element("p", { className: "largest", textContent: "Largest" }));
      }
      return tile;
    });
    const similarity =
      group.closest === group.loosest
        ? `similarity ${group.closest.toFixed(3)}`
        : `similarity ${group.loosest.toFixed(3)}–${group.closest.toFixed(3)}`;
    const heading = element("h2", {
      textContent: `Group ${number + 1}: ${fmt.plural(group.photos.length, "photo")}, ${similarity}`,
    });
    const section = element("section", { className: "duplicate-group" }, [
      heading,
      element("div", { className: "duplicate-row" }, cards),
    ]);
    section.setAttribute("aria-label", heading.textContent);
    return section;
  }
}
