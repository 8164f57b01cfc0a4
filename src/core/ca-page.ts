/**
 * @module The CA where agents are (issue 11), like mitmproxy's mitm.it: the proxy and cache ports answer a plain
 * `GET /ca.pem`, `GET /ca.der`, `GET /ca` (a small page with per-OS install steps) and `GET /ca.msi` (a Windows
 * Installer package, store/ca-msi.ts) sent to the port directly, with no token — the CA certificate is public by
 * nature. For a rollover, `?next=1` gives the next CA the admin published and `/ca-bundle.pem` both (current, then
 * next). Only these paths (and `/healthz`, see connect.ts): nothing else of the management plane is reachable on an
 * agent port. Pure: the shell passes the certificates' bytes, fingerprints and packages in (made once per CA).
 */
import { makeResponse } from "./http1/serialize";
import type { Headers } from "./http1/head";
import type { ErrorCode } from "./errors";

/** The Windows Installer package for one CA (store/ca-msi.ts builds it once per CA), or why there is none. */
export type AgentCaMsi = { bytes: Uint8Array } | { unavailable: string };

/** One CA as agents install it: the root (for a customer chain, its root; else the CA itself). */
export type AgentCaCert = {
  /** PEM text, as served */
  pem: Uint8Array;
  der: Uint8Array;
  /** SHA-256 of the DER, upper-case hex pairs joined by ":" (what certutil / Keychain / openssl show) */
  sha256: string;
  commonName: string;
  /** ms since the epoch */
  notAfter: number;
  /** `GET /ca.msi`; absent: not built (the route answers 503) */
  msi?: AgentCaMsi;
};

/** The active CA, and the next one when the admin published it ahead of a rollover (`?next=1`, `/ca-bundle.pem`). */
export type AgentCa = AgentCaCert & { next?: AgentCaCert | null };

export type CaRoute = "pem" | "der" | "page" | "msi" | "bundle";
/** What was asked: the route, and whether for the next CA (`?next=1`) instead of the active one. */
export type CaAsk = { route: CaRoute; next: boolean };
/** Why there is nothing to give: the caller refuses with the code (statusFor: 404 / 503) and the reason. */
export type CaRefusal = { refuse: Extract<ErrorCode, "PX_NOT_FOUND" | "PX_CA_MSI_UNAVAILABLE">; reason: string };
export type CaDownload = { headers: Headers; body: Uint8Array | string };

const ROUTES: Record<string, CaRoute> = { "/ca.pem": "pem", "/ca.der": "der", "/ca": "page", "/ca.msi": "msi", "/ca-bundle.pem": "bundle" };

/** `next` present and not "0"/"false" (`?next=1`, `?next`): a typo such as `?next=yes` still asks for the next CA. */
function asksNext(query: string): boolean {
  for (const part of query.split("&")) {
    const eq = part.indexOf("=");
    const k = eq === -1 ? part : part.slice(0, eq);
    if (k !== "next") continue;
    const v = eq === -1 ? "" : part.slice(eq + 1).toLowerCase();
    return v !== "0" && v !== "false";
  }
  return false;
}

/**
 * `GET`/`HEAD` of one of the CA paths, else null; `?next=1` asks for the next CA (other query parameters are
 * ignored, as for /healthz). Origin-form only: an absolute-form `GET http://x/ca.pem` is a forward-proxy request for
 * another host, not a question to this port.
 */
export function caRouteOf(method: string, target: string): CaAsk | null {
  if (method !== "GET" && method !== "HEAD") return null;
  if (target.charCodeAt(0) !== 47 /* / */) return null;
  const q = target.indexOf("?");
  const route = ROUTES[q === -1 ? target : target.slice(0, q)];
  if (route === undefined) return null;
  return { route, next: q !== -1 && asksNext(target.slice(q + 1)) };
}

const COMMON: Headers = [
  ["Cache-Control", "no-cache"],
  ["X-Content-Type-Options", "nosniff"],
];

const NO_NEXT =
  "no next CA is published: an admin publishes one before a rollover (POST /api/ca/next on the management port); /ca.pem is the current CA";

const attachment = (type: string, name: string): Headers => [["Content-Type", type], ["Content-Disposition", `attachment; filename="${name}"`], ...COMMON];

/** PEM texts joined so that each starts on its own line (RFC 7468 §2: one PEM block after another). */
function joinPem(a: Uint8Array, b: Uint8Array): Uint8Array {
  const sep = a.byteLength > 0 && a[a.byteLength - 1] !== 10 ? 1 : 0;
  const out = new Uint8Array(a.byteLength + sep + b.byteLength);
  out.set(a, 0);
  if (sep) out[a.byteLength] = 10;
  out.set(b, a.byteLength + sep);
  return out;
}

/**
 * What `ask` gets: the body and its headers, or why not. The one decision for every port (the agent ports through
 * `makeCaAnswer`, the management port through admin/ca-downloads.ts), so they cannot drift apart.
 */
export function decideCaDownload(ca: AgentCa | null, ask: CaAsk, host: string | null): CaDownload | CaRefusal {
  if (ca === null) return { refuse: "PX_NOT_FOUND", reason: "no CA loaded yet: ask the gateway's admin" };
  const next = ca.next ?? null;
  // the page and the bundle show both CAs anyway: ?next=1 changes nothing there
  if (ask.next && next === null && ask.route !== "page" && ask.route !== "bundle") return { refuse: "PX_NOT_FOUND", reason: NO_NEXT };
  const one = ask.next && next !== null ? next : ca;
  const suffix = one === ca ? "" : "-next";
  switch (ask.route) {
    case "pem":
      return { headers: attachment("application/x-pem-file", `agate-ca${suffix}.pem`), body: one.pem };
    case "der":
      // The management port's type for /ca.der: browsers and Windows offer to install it.
      return { headers: attachment("application/x-x509-ca-cert", `agate-ca${suffix}.der`), body: one.der };
    case "msi": {
      const msi = one.msi;
      if (msi === undefined) return { refuse: "PX_CA_MSI_UNAVAILABLE", reason: "the Windows installer package has not been built for this CA; use /ca.der" };
      if ("unavailable" in msi) return { refuse: "PX_CA_MSI_UNAVAILABLE", reason: msi.unavailable };
      return { headers: attachment("application/x-msi", `agate-ca${suffix}.msi`), body: msi.bytes };
    }
    case "bundle":
      return { headers: attachment("application/x-pem-file", "agate-ca-bundle.pem"), body: next ? joinPem(ca.pem, next.pem) : ca.pem };
    case "page":
      return {
        headers: [
          ["Content-Type", "text/html; charset=utf-8"],
          // the page runs nothing and loads nothing: inline style only
          ["Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"],
          ...COMMON,
        ],
        body: makeCaPage(ca, host),
      };
  }
}

export const isCaRefusal = (x: CaDownload | CaRefusal): x is CaRefusal => "refuse" in x;

/** The whole answer to `ask` on an agent port (the connection closes after it), or why there is none. */
export function makeCaAnswer(ca: AgentCa | null, ask: CaAsk, o: { headOnly: boolean; host: string | null }): Uint8Array | CaRefusal {
  const d = decideCaDownload(ca, ask, o.host);
  if (isCaRefusal(d)) return d;
  const headers: Headers = [...d.headers, ["Connection", "close"]];
  if (!o.headOnly) return makeResponse(200, headers, d.body);
  const length = typeof d.body === "string" ? new TextEncoder().encode(d.body).byteLength : d.body.byteLength;
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
  const msiOk = ca.msi !== undefined && "bytes" in ca.msi;
  const msiWhy = ca.msi === undefined ? "not built" : "unavailable" in ca.msi ? ca.msi.unavailable : "";
  const n = ca.next ?? null;
  const nextPart = n
    ? `<h2>Next CA (rollover)</h2>
<p>The admin has published the CA that will replace this one: <b>${escapeHtml(n.commonName)}</b> (valid until ${new Date(n.notAfter).toISOString().slice(0, 10)}).
Install it now too, so agents keep working when it is assigned: <a href="ca.pem?next=1">ca.pem?next=1</a> · <a href="ca.der?next=1">ca.der?next=1</a>${n.msi && "bytes" in n.msi ? ' · <a href="ca.msi?next=1">ca.msi?next=1</a>' : ""} · both in one file: <a href="ca-bundle.pem">ca-bundle.pem</a></p>
<p>Its SHA-256 fingerprint:<br><code>${escapeHtml(n.sha256)}</code></p>
`
    : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Install the agate CA</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}code{word-break:break-all}</style>
</head><body>
<h1>Install the agate CA</h1>
<p>This gateway inspects TLS for the hosts it caches, with certificates issued by <b>${cn}</b> (valid until ${until}).
Agents and tools that connect through it must trust this CA.</p>
<p>Download: <a href="ca.pem">ca.pem</a> (PEM) · <a href="ca.der">ca.der</a> (DER, for Windows)${msiOk ? ' · <a href="ca.msi">ca.msi</a> (Windows Installer package)' : ""}</p>
<p>SHA-256 fingerprint — compare it before trusting the file:<br><code>${escapeHtml(ca.sha256)}</code></p>
${nextPart}${msiOk
    ? step("Windows, many machines (GPO / SCCM / Intune: the package adds the CA to the machine's Trusted Root store)", [`curl -o agate-ca.msi ${base}/ca.msi`, "msiexec /i agate-ca.msi /qn"])
    : `<h2>Windows, many machines</h2>\n<p>No Windows Installer package on this gateway (${escapeHtml(msiWhy)}). Deploy the DER file with the PowerShell commands below as a GPO startup script or an SCCM/Intune script, run as SYSTEM.</p>`}
${step("Windows (cmd, as Administrator)", [`curl -o agate-ca.der ${base}/ca.der`, "certutil -addstore Root agate-ca.der"])}
${step("Windows (PowerShell, as Administrator)", [`Invoke-WebRequest -Uri ${base}/ca.der -OutFile agate-ca.der`, "Import-Certificate -FilePath agate-ca.der -CertStoreLocation Cert:\\LocalMachine\\Root"])}
${step("macOS", [`curl -o agate-ca.pem ${base}/ca.pem`, "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain agate-ca.pem"])}
${step("Debian / Ubuntu", [`curl -o agate-ca.crt ${base}/ca.pem`, "sudo cp agate-ca.crt /usr/local/share/ca-certificates/agate-ca.crt", "sudo update-ca-certificates"])}
${step("RHEL / CentOS / Fedora", [`curl -o agate-ca.pem ${base}/ca.pem`, "sudo cp agate-ca.pem /etc/pki/ca-trust/source/anchors/agate-ca.pem", "sudo update-ca-trust"])}
<p>Check the fingerprint of a downloaded file: <code>openssl x509 -in agate-ca.pem -noout -fingerprint -sha256</code></p>
</body></html>
`;
}
