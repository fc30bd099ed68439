// Starts Swagger UI over the shim's own OpenAPI document. A file, not an inline script: the
// page's Content-Security-Policy runs scripts from the shim's origin only.
"use strict";

// The Authorize dialog's client-credentials request (Swagger UI marks it X-Requested-With)
// carries the client as a Basic header. To a wrong secret in a Basic header the token
// endpoint answers as Kong did: 401 with a Basic challenge, which the browser answers with
// its own login prompt, and the dialog never sees the error. In the form body (the legacy
// docs' way, which the endpoint reads first), a wrong secret is Kong's 400 invalid_client,
// shown in the dialog.
function clientInForm(request) {
  var headers = request.headers || {};
  var basic = /^Basic (.+)$/.exec(headers.Authorization || "");
  var form = new URLSearchParams(typeof request.body === "string" ? request.body : "");
  if (!basic || headers["X-Requested-With"] !== "XMLHttpRequest" ||
      form.get("grant_type") !== "client_credentials") {
    return request;
  }
  var bytes = Uint8Array.from(atob(basic[1]), function (c) { return c.charCodeAt(0); });
  var client = new TextDecoder().decode(bytes);
  var colon = client.indexOf(":");
  form.set("client_id", client.slice(0, colon));
  form.set("client_secret", client.slice(colon + 1));
  request.body = form.toString();
  delete headers.Authorization;
  return request;
}

window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: new URL(root.dataset.spec, document.baseURI).href,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    requestInterceptor: clientInForm,
    // Swagger UI would send the document to a public validator: nothing leaves the page.
    validatorUrl: null,
    // A token is kept for the page's life only, never in the browser's storage.
    persistAuthorization: false,
    displayRequestDuration: true,
  });
});
