// Progressive enhancement only: every form works without this file.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy-target]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copyTarget);
  if (!field) return;
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => document.execCommand("copy") && done());
  } else if (document.execCommand("copy")) {
    done();
  }
});

// Typed confirmations: keep the destructive button disabled until the name matches.
// The server checks the same thing, so this is only a convenience.
for (const input of document.querySelectorAll("input[data-confirm-value]")) {
  const button = input.form && input.form.querySelector("button[type=submit]");
  if (!button) continue;
  const sync = () => { button.disabled = input.value !== input.dataset.confirmValue; };
  input.addEventListener("input", sync);
  sync();
}

// Ask before one-click destructive actions (revoke, disable). Without JavaScript they just run.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});
