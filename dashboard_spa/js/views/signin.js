import { h } from "../dom.js";

export function signInView({ message = "", machineId, onSubmit }) {
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "current-password",
    placeholder: "API token", required: true, testid: "signin-token" });
  const error = h("div", { class: "form-error", testid: "signin-error", role: "alert" }, message);
  const button = h("button", { type: "submit", class: "btn btn-primary", testid: "signin-submit" }, "Sign in");
  const form = h("form", {
    class: "signin-card", testid: "signin",
    onsubmit: async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      button.disabled = true;
      error.textContent = "";
      try {
        const problem = await onSubmit(input.value);
        if (problem) error.textContent = problem;
      } finally {
        button.disabled = false;
      }
    },
  },
  h("h1", {}, h("span", { class: "brand-mark" }, "◆"), " Agent machine"),
  machineId ? h("p", { class: "muted" }, `Machine ${machineId}`) : null,
  h("label", { for: "token" }, "API token"),
  input,
  h("p", { class: "hint" }, "The token is kept in this browser only. The link printed by run-local signs you in too."),
  error,
  button);
  setTimeout(() => input.focus(), 0);
  return h("div", { class: "signin-page" }, form);
}
