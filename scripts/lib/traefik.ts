/**
 * The route table (functions/routes.ts) as Traefik v3 rules. The same rule strings become the router
 * labels in stacks/app.yml and drive the local router of `npm run stack:local`, which evaluates them
 * with `matchesRule` below — so the routing exercised locally is the routing Swarm users get.
 */
import type { RouteSpec } from '../../functions/route-spec.ts';
import { FUNCTION_ROUTES, type HttpFunction, type RoutedService, SITE_FUNCTION } from '../../functions/routes.ts';

/** The HTTP functions in table order. */
export const ROUTED_FUNCTIONS = Object.keys(FUNCTION_ROUTES) as HttpFunction[];

/** The site catches every path no function owns, so it must lose to every function router. */
export const SITE_RULE = 'PathPrefix(`/`)';
export const SITE_PRIORITY = 1;

/**
 * Fastify matches `:param` as one non-empty segment and ignores a trailing slash
 * (`ignoreTrailingSlash`), so the regexp does the same; anchored because Traefik's PathRegexp is not.
 */
export function pathPattern(path: string): string {
  const segments = path
    .split('/')
    .filter(Boolean)
    .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  return `^/${segments.join('/')}/?$`;
}

/** A GET route also takes HEAD (Fastify answers it from the GET handler, without the body). */
export function routeRule(route: Pick<RouteSpec, 'method' | 'path'>): string {
  const method = route.method === 'GET' ? '(Method(`GET`) || Method(`HEAD`))' : `Method(\`${route.method}\`)`;
  return `${method} && PathRegexp(\`${pathPattern(route.path)}\`)`;
}

/** One router per function: its routes joined with `||`, each route appearing exactly once. */
export function functionRule(name: HttpFunction): string {
  const routes = FUNCTION_ROUTES[name];
  if (routes.length === 1) return routeRule(routes[0]!);
  return routes.map((route) => `(${routeRule(route)})`).join(' || ');
}

export interface RouterSpec {
  service: RoutedService;
  /** The router's own name where a service has more than one (its first is named after it). */
  router?: string;
  rule: string;
  priority?: number;
}

/**
 * API paths no function router takes (a method the path does not take, OPTIONS, or no such path)
 * go to the health function, which answers 405 with `Allow` or 404 in the API's error shape, not
 * the site's HTML page. Above the site's catch-all, below every function router.
 */
export const API_FALLBACK_RULE = 'PathRegexp(`^/api(/|$)`)';
export const API_FALLBACK_PRIORITY = 2;

/** Every router of the stack, functions first, then the API's and the site's catch-alls. */
export function stackRouters(): RouterSpec[] {
  return [
    ...ROUTED_FUNCTIONS.map((name) => ({ service: name, rule: functionRule(name) })),
    { service: 'health', router: 'api-fallback', rule: API_FALLBACK_RULE, priority: API_FALLBACK_PRIORITY },
    { service: SITE_FUNCTION, rule: SITE_RULE, priority: SITE_PRIORITY },
  ];
}

/**
 * A router's rule restricted to the public host name: without it, any host pointed at Traefik (the
 * Grafana domain included) would reach FlagMeter's paths.
 */
export function hostRule(rule: string, host: string): string {
  return `Host(\`${host}\`) && (${rule})`;
}

// --- A small evaluator for the rule subset above (Host, Method, Path, PathPrefix, PathRegexp, &&, ||, !, ()).

type RuleNode =
  | { kind: 'and' | 'or'; left: RuleNode; right: RuleNode }
  | { kind: 'not'; operand: RuleNode }
  | { kind: 'matcher'; name: string; args: string[] };

const MATCHERS = new Set(['Host', 'Method', 'Path', 'PathPrefix', 'PathRegexp']);

function tokenize(rule: string): string[] {
  const tokens: string[] = [];
  const pattern = /\s*(&&|\|\||!|\(|\)|,|`[^`]*`|[A-Za-z]+)/y;
  let position = 0;
  while (position < rule.length) {
    if (/^\s*$/.test(rule.slice(position))) break;
    pattern.lastIndex = position;
    const match = pattern.exec(rule);
    if (!match) throw new Error(`cannot parse rule at ${position}: ${rule}`);
    tokens.push(match[1]!);
    position = pattern.lastIndex;
  }
  return tokens;
}

/** Parses a Traefik rule of the supported subset; throws on anything else so no rule is silently misread. */
export function parseRule(rule: string): RuleNode {
  const tokens = tokenize(rule);
  let index = 0;
  const peek = () => tokens[index];
  const take = (expected?: string): string => {
    const token = tokens[index++];
    if (token === undefined || (expected !== undefined && token !== expected)) {
      throw new Error(`expected ${expected ?? 'a token'} in rule: ${rule}`);
    }
    return token;
  };
  const primary = (): RuleNode => {
    const token = take();
    if (token === '!') return { kind: 'not', operand: primary() };
    if (token === '(') {
      const inner = or();
      take(')');
      return inner;
    }
    if (!MATCHERS.has(token)) throw new Error(`unsupported matcher ${token} in rule: ${rule}`);
    take('(');
    const args: string[] = [];
    while (peek() !== ')') {
      const arg = take();
      if (!arg.startsWith('`')) throw new Error(`expected a backquoted argument in rule: ${rule}`);
      args.push(arg.slice(1, -1));
      if (peek() === ',') take(',');
    }
    take(')');
    return { kind: 'matcher', name: token, args };
  };
  const and = (): RuleNode => {
    let node = primary();
    while (peek() === '&&') {
      take();
      node = { kind: 'and', left: node, right: primary() };
    }
    return node;
  };
  const or = (): RuleNode => {
    let node = and();
    while (peek() === '||') {
      take();
      node = { kind: 'or', left: node, right: and() };
    }
    return node;
  };
  const root = or();
  if (index !== tokens.length) throw new Error(`unexpected ${tokens[index]} in rule: ${rule}`);
  return root;
}

export interface RequestLine {
  method: string;
  /** The path without the query string. */
  path: string;
  /** The Host header; only `Host()` rules read it. */
  host?: string;
}

function evaluate(node: RuleNode, request: RequestLine): boolean {
  switch (node.kind) {
    case 'and':
      return evaluate(node.left, request) && evaluate(node.right, request);
    case 'or':
      return evaluate(node.left, request) || evaluate(node.right, request);
    case 'not':
      return !evaluate(node.operand, request);
    case 'matcher': {
      const [arg = ''] = node.args;
      if (node.name === 'Method') return node.args.includes(request.method.toUpperCase());
      // Like Traefik: case-insensitive, and a port in the Host header does not count.
      if (node.name === 'Host') return (request.host ?? '').toLowerCase().replace(/:\d+$/, '') === arg.toLowerCase();
      if (node.name === 'Path') return request.path === arg;
      if (node.name === 'PathPrefix') return request.path.startsWith(arg);
      return new RegExp(arg).test(request.path);
    }
  }
}

export function matchesRule(rule: string | RuleNode, request: RequestLine): boolean {
  return evaluate(typeof rule === 'string' ? parseRule(rule) : rule, request);
}

export interface CompiledRouter<T extends string = string> {
  name: T;
  match(request: RequestLine): boolean;
  priority: number;
}

/**
 * Orders routers the way Traefik does: explicit priority, else the rule's length; the highest wins.
 */
export function compileRouters<T extends string>(routers: { name: T; rule: string; priority?: number }[]): CompiledRouter<T>[] {
  return routers
    .map((router) => {
      const node = parseRule(router.rule);
      return {
        name: router.name,
        priority: router.priority ?? router.rule.length,
        match: (request: RequestLine) => evaluate(node, request),
      };
    })
    .sort((a, b) => b.priority - a.priority);
}

/** The router a request goes to, or undefined when none matches (Traefik answers 404). */
export function routeRequest<T extends string>(routers: CompiledRouter<T>[], request: RequestLine): T | undefined {
  return routers.find((router) => router.match(request))?.name;
}

/** Router and service names in Traefik are global across stacks; prefix ours. */
export const routerName = (service: RoutedService): string => `flagmeter-${service}`;

/** The overlay network Traefik reaches the functions on (stacks/app.yml `networks.flagmeter.name`). */
export const STACK_NETWORK = 'flagmeter';

/** Port every function and the site listen on inside their containers. */
export const CONTAINER_PORT = 3000;

/**
 * The `deploy.labels` of one routed service in stacks/app.yml, as written in the file: `$` doubled,
 * because `docker stack deploy` interpolates `$` in every value; the resolver stays a variable.
 */
export function traefikLabels(router: RouterSpec): Record<string, string> {
  const name = router.router === undefined ? routerName(router.service) : `flagmeter-${router.router}`;
  const service = routerName(router.service);
  return {
    'traefik.enable': 'true',
    'traefik.swarm.network': STACK_NETWORK,
    [`traefik.http.routers.${name}.rule`]: hostRule(
      router.rule.replaceAll('$', () => '$$'),
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a stack-file variable, resolved by docker stack deploy.
      '${DOMAIN}',
    ),
    ...(router.priority === undefined ? {} : { [`traefik.http.routers.${name}.priority`]: String(router.priority) }),
    [`traefik.http.routers.${name}.entrypoints`]: 'websecure',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a stack-file variable, resolved by docker stack deploy.
    [`traefik.http.routers.${name}.tls.certresolver`]: '${ACME_RESOLVER:-letsencrypt}',
    [`traefik.http.routers.${name}.service`]: service,
    [`traefik.http.services.${service}.loadbalancer.server.port`]: String(CONTAINER_PORT),
  };
}

/** The `deploy.labels` of a routed service: those of each of its routers. */
export function serviceLabels(service: RoutedService): Record<string, string> {
  return Object.assign(
    {},
    ...stackRouters()
      .filter((router) => router.service === service)
      .map(traefikLabels),
  );
}
