/**
 * @module The CA where agents are (issue 11), like mitmproxy's mitm.it: the proxy and cache ports answer a plain
 * `GET /ca.pem`, `GET /ca.der` and `GET /ca` (a small page with per-OS install steps) sent to the port directly,
 * with no token — the CA certificate is public by nature. Only these three paths (and `/healthz`, see connect.ts):
 * nothing else of the management plane is reachable on an agent port. Pure: the shell passes the certificate's
 * bytes and SHA-256 fingerprint in (it decodes and hashes once per CA, not per request).
 */
import { makeResponse } from "./http1/serialize";
import type { Headers } from "./http1/head";

/** The active CA as agents install it: the root (for a customer chain, its root; else the CA itself). */
export type AgentCa = {
  /** PEM text, as served */
  pem: Uint8Array;
  der: Uint8Array;
  /** SHA-256 of the DER, upper-case hex pairs joined by ":" (what certutil / Keychain / openssl show) */
  sha256: string;
  commonName: string;
  /** ms since the epoch */
  notAfter: number;
};

export type CaRoute = "pem" | "der" | "page";

const ROUTES: Record<string, CaRoute> = { "/ca.pem": "pem", "/ca.der": "der", "/ca": "page" };

/**
 * `GET`/`HEAD` of one of the three paths (a query is ignored, as for /healthz), else null. Origin-form only: an
 * absolute-form `GET http://x/ca.pem` is a forward-proxy request for another host, not a question to this port.
 */
export function caRouteOf(method: string, target: string): CaRoute | null {
  if (method !== "GET" && method !== "HEAD") return null;
  if (target.charCodeAt(0) !== 47 /* / */) return null;
  const q = target.indexOf("?");
  return ROUTES[q === -1 ? target : target.slice(0, q)] ?? null;
}

const COMMON: Headers = [
  ["Cache-Control", "no-cache"],
  ["X-Content-Type-Options", "nosniff"],
  ["Connection", "close"],
];

/** The whole answer to `route`, or null when there is no CA to give (the caller refuses 404 with a reason). */
export function makeCaAnswer(ca: AgentCa | null, route: CaRoute, o: { headOnly: boolean; host: string | null }): Uint8Array | null {
  if (ca === null) return null;
  let headers: Headers;
  let body: Uint8Array | string;
  switch (route) {
    case "pem":
      headers = [["Content-Type", "application/x-pem-file"], ["Content-Disposition", 'attachment; filename="agate-ca.pem"'], ...COMMON];
      body = ca.pem;
      break;
    case "der":
      // The management port's type for /ca.der (admin/api.ts): browsers and Windows offer to install it.
      headers = [["Content-Type", "application/x-x509-ca-cert"], ["Content-Disposition", 'attachment; filename="agate-ca.der"'], ...COMMON];
      body = ca.der;
      break;
    case "page":
      headers = [
        ["Content-Type", "text/html; charset=utf-8"],
        // the page runs nothing and loads nothing: inline style only
        ["Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"],
        ...COMMON,
      ];
      body = makeCaPage(ca, o.host);
      break;
  }
  if (!o.headOnly) return makeResponse(200, headers, body);
  const length = typeof body === "string" ? new TextEncoder().encode(body).byteLength : body.byteLength;
  return makeResponse(200, [...headers, ["Content-Length", String(length)]]);
}

/** host[:port], a dotted IPv4 or a [IPv6] literal: the only Host values echoed into the page's commands. */
const SAFE_HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The install page: download links (relative, so they work under whatever name the agent used) and the commands
 * for each system. `host` is the request's Host header; anything but a plain host[:port] becomes a placeholder.
 */
export function makeCaPage(ca: AgentCa, host: string | null): string {
  const h = host !== null && SAFE_HOST.test(host) ? host : "GATEWAY:PORT";
  const base = `http://${h}`;
  const cn = escapeHtml(ca.commonName);
  const until = new Date(ca.notAfter).toISOString().slice(0, 10);
  const step = (os: string, lines: string[]) =>
    `<h2>${os}</h2>\n<pre>${lines.map(escapeHtml).join("\n")}</pre>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Install the agate CA</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}code{word-break:break-all}</style>
</head><body>
<h1>Install the agate CA</h1>
<p>This gateway inspects TLS for the hosts it caches, with certificates issued by <b>${cn}</b> (valid until ${until}).
Agents and tools that connect through it must trust this CA.</p>
<p>Download: <a href="ca.pem">ca.pem</a> (PEM) · <a href="ca.der">ca.der</a> (DER, for Windows)</p>
<p>SHA-256 fingerprint — compare it before trusting the file:<br><code>${escapeHtml(ca.sha256)}</code></p>
${step("Windows (cmd, as Administrator)", [`curl -o agate-ca.der ${base}/ca.der`, "certutil -addstore Root agate-ca.der"])}
${step("Windows (PowerShell, as Administrator)", [`Invoke-WebRequest -Uri ${base}/ca.der -OutFile agate-ca.der`, "Import-Certificate -FilePath agate-ca.der -CertStoreLocation Cert:\\LocalMachine\\Root"])}
${step("macOS", [`curl -o agate-ca.pem ${base}/ca.pem`, "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain agate-ca.pem"])}
${step("Debian / Ubuntu", [`curl -o agate-ca.crt ${base}/ca.pem`, "sudo cp agate-ca.crt /usr/local/share/ca-certificates/agate-ca.crt", "sudo update-ca-certificates"])}
${step("RHEL / CentOS / Fedora", [`curl -o agate-ca.pem ${base}/ca.pem`, "sudo cp agate-ca.pem /etc/pki/ca-trust/source/anchors/agate-ca.pem", "sudo update-ca-trust"])}
<p>Check the fingerprint of a downloaded file: <code>openssl x509 -in agate-ca.pem -noout -fingerprint -sha256</code></p>
</body></html>
`;
}
