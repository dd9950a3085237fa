import { h } from "../dom.js";

export function notFoundView({ main, setTitle }) {
  setTitle("Not found");
  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Page not found"),
    h("p", {}, "There is nothing at this address. ", h("a", { href: "#/" }, "Go to the build matrix"), "."),
  );
  return {};
}
