/**
 * @module Dialling origins: directly (a [hosts] mapping or DNS, then the address policy), or through the
 * upstream proxy with CONNECT, always sending the host name (the upstream proxy may filter by domain) and
 * Basic credentials when configured. Failures come back as ProxyError values with a reason a person can act on.
 */
import type { Socket, SocketHandler } from "bun";
import { ProxyError, printable } from "../core/errors";
import type { Config } from "../core/config";
import { isIPv4, isIPv6 } from "../core/config";
import type { Target } from "../core/types";
import { NEED_MORE, parseResponseHead } from "../core/http1/head";
import { decideAddress, type Policy } from "../core/policy";
import { type PipeEnd, makePipeEnd } from "./tunnel";
import { HeadAccumulator } from "./pipe";

/** Origin-side state. During the proxy handshake `hs` is set; afterwards the socket is a plain pipe end. */
export type OriginConn = PipeEnd & {
  side: "origin";
  hs: Handshake | null;
};

type Handshake = {
  /** the upstream proxy's answer head, until it is whole */
  head: HeadAccumulator;
  resolve: (r: Dialled) => void;
  reject: (e: ProxyError) => void;
  via: string;
  target: Target;
};

export type Dialled = { sock: Socket<OriginConn>; leftover: Uint8Array | null; address: string; via: "direct" | "upstream-proxy" };

export type DialOptions = {
  config: Config;
  policy: Policy;
  handlers: SocketHandler<OriginConn>;
  now: number;
};

const textEncoder = new TextEncoder();

/** Resolve a name: [hosts] first, then DNS. Returns the address to connect to, after the address policy. */
export async function resolveTarget(target: Target, config: Config, policy: Policy): Promise<string> {
  const mapped = config.hosts[target.host];
  if (mapped) return mapped;
  if (target.isIp) return target.host;
  let addrs: { address: string }[];
  try {
    addrs = await Bun.dns.lookup(target.host, {});
  } catch (e) {
    throw new ProxyError("PX_DNS", "upstream", `cannot resolve ${target.host}: ${(e as Error).message}`, { cause: e });
  }
  if (!addrs.length) throw new ProxyError("PX_DNS", "upstream", `cannot resolve ${target.host}: no addresses`);
  // Refuse when any address is internal: a name that points inside the site is not a vendor's platform.
  for (const a of addrs) {
    const v = decideAddress(policy, target, a.address);
    if (v) throw new ProxyError("PX_POLICY_DENY", "client", v.reason ?? `${target.host} resolves to an internal address`);
  }
  return addrs[0]!.address;
}

/** Connect a TCP socket with a deadline; the socket's `data` starts as a fresh OriginConn. */
async function connectWithTimeout(
  hostname: string,
  port: number,
  opts: DialOptions,
  what: string,
): Promise<Socket<OriginConn>> {
  const data: OriginConn = { ...makePipeEnd(opts.now), side: "origin", hs: null };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const connectOpts: Bun.TCPSocketConnectOptions<OriginConn> = { hostname, port, data, allowHalfOpen: true, socket: opts.handlers };
  const p = Bun.connect<OriginConn>(connectOpts);
  const deadline = new Promise<never>((_, rej) => {
    timer = setTimeout(() => {
      timedOut = true;
      rej(new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${what} did not answer within ${opts.config.proxy.connect_timeout_s}s`));
    }, opts.config.proxy.connect_timeout_s * 1000);
  });
  try {
    return await Promise.race([p, deadline]);
  } catch (e) {
    if (e instanceof ProxyError) {
      p.then((s) => s.terminate(), () => {});
      throw e;
    }
    const code = (e as { code?: string }).code ?? "";
    const why = code === "ECONNREFUSED" ? "connection refused" : code === "ETIMEDOUT" ? "timed out" : (e as Error).message;
    if (code === "ETIMEDOUT" || timedOut) throw new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${what} did not answer: ${why}`, { cause: e });
    throw new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", `cannot reach ${what}: ${why}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

/** Dial the target directly or through the upstream proxy. */
export async function dialTarget(target: Target, opts: DialOptions): Promise<Dialled> {
  const up = opts.config.upstream_proxy;
  if (!up) {
    const address = await resolveTarget(target, opts.config, opts.policy);
    const host = isIPv6(address) ? address : address;
    const sock = await connectWithTimeout(host, target.port, opts, `${target.host}:${target.port}`);
    return { sock, leftover: null, address, via: "direct" };
  }
  // The upstream proxy's own address: [hosts] applies to it too (nested gateways), else DNS.
  const proxyAddr = opts.config.hosts[up.host] ?? (isIPv4(up.host) ? up.host : up.host);
  const via = `upstream proxy ${up.host}:${up.port}`;
  const sock = await connectWithTimeout(proxyAddr, up.port, opts, via);
  const authority = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (up.username) head += `Proxy-Authorization: Basic ${btoa(`${up.username}:${up.password ?? ""}`)}\r\n`;
  head += "\r\n";
  return new Promise<Dialled>((resolve, reject) => {
    const timer = setTimeout(() => {
      if (!sock.data.hs) return;
      sock.data.hs = null;
      sock.terminate();
      reject(new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${via} did not answer CONNECT ${authority} within ${opts.config.proxy.connect_timeout_s}s`));
    }, opts.config.proxy.connect_timeout_s * 1000);
    sock.data.hs = {
      head: new HeadAccumulator(),
      via,
      target,
      resolve: (r) => (clearTimeout(timer), resolve(r)),
      reject: (e) => (clearTimeout(timer), reject(e)),
    };
    sock.write(textEncoder.encode(head));
  });
}

/** Origin `data` while the upstream proxy handshake is in progress. */
export function onHandshakeData(sock: Socket<OriginConn>, chunk: Uint8Array): void {
  const hs = sock.data.hs!;
  const buf = hs.head.push(chunk);
  let res;
  try {
    res = parseResponseHead(buf);
  } catch (e) {
    sock.data.hs = null;
    sock.terminate();
    hs.reject(new ProxyError("PX_UPSTREAM_PROXY", "upstream", `${hs.via} sent a malformed answer: ${(e as Error).message}`));
    return;
  }
  if (res === NEED_MORE) {
    hs.head.keep(buf, chunk);
    return;
  }
  hs.head.clear();
  sock.data.hs = null;
  if (res.status === 200) {
    const leftover = buf.byteLength > res.headBytes ? buf.slice(res.headBytes) : null;
    hs.resolve({ sock, leftover, address: hs.via, via: "upstream-proxy" });
    return;
  }
  sock.terminate();
  // The upstream's own one-line reason, when its body already arrived with the head.
  const said = new TextDecoder("latin1").decode(buf.subarray(res.headBytes, res.headBytes + 300)).split(/\r?\n/)[0]!.trim();
  const hint =
    res.status === 407
      ? " (check upstream_proxy.username and upstream_proxy.password)"
      : res.status === 403
        ? ` (the upstream proxy does not allow ${hs.target.host})`
        : "";
  hs.reject(
    new ProxyError(
      "PX_UPSTREAM_PROXY",
      "upstream",
      `${hs.via} refused CONNECT ${hs.target.host}:${hs.target.port}: ${res.status} ${printable(res.reason, 80)}${said ? ` (${printable(said, 200)})` : ""}${hint}`,
    ),
  );
}

/** Origin closed during the handshake. */
export function onHandshakeClose(sock: Socket<OriginConn>): void {
  const hs = sock.data.hs;
  if (!hs) return;
  sock.data.hs = null;
  hs.reject(new ProxyError("PX_UPSTREAM_PROXY", "upstream", `${hs.via} closed the connection before answering CONNECT`));
}
