/**
 * The OpenAPI 3.1 document, generated from route declarations (ApiRoute) whose schemas are the
 * zod schemas the routes validate requests with and the wire's response schemas
 * (lib/shared/wire.ts): zod 4's JSON Schema output, so the description cannot say one thing while
 * the code checks another.
 */
import { z } from "zod";

/** The HTTP methods the API uses. */
export type ApiMethod = "get" | "post" | "put" | "patch" | "delete" | "options" | "head";

/**
 * Who may call: `none` (anyone), `account` (a bearer token or the session cookie), `stream`
 * (also `?token=`, for EventSource and WebSocket clients that cannot set headers).
 */
export type ApiAuth = "none" | "account" | "stream";

/** One answer a route gives: JSON by default, described by a schema when it has a body. */
export interface ApiResponse {
  description: string;
  schema?: z.ZodType;
  /** Default `application/json`; a stream or a download names its own. */
  contentType?: string;
}

/** One route as the document describes it; its key is `method` + `path` (Hono's syntax). */
export interface ApiRoute {
  method: ApiMethod;
  /** As the router spells it: `/api/tokens/:id`. */
  path: string;
  /** Groups routes in the document and on /docs/api. */
  tag: string;
  summary: string;
  description?: string;
  auth: ApiAuth;
  /** The token scope the route needs, when it needs one. */
  scope?: string;
  /** What each `:param` of the path is. */
  params?: Record<string, string>;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** By status; an undeclared error status is described by `default` (the error shape). */
  responses: Record<number, ApiResponse>;
}

/** Named schemas of the document's `components.schemas`, referenced wherever they appear. */
export type NamedSchemas = Record<string, z.ZodType>;

/** A JSON value, as the document holds it. */
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** The path in OpenAPI's syntax: `/api/tokens/{id}`. */
export function openApiPath(path: string): string {
  return path.replace(/:(\w+)/g, "{$1}");
}

/** The names of a path's parameters, in order. */
export function pathParams(path: string): string[] {
  return [...path.matchAll(/:(\w+)/g)].map((match) => match[1]);
}

/** Builds the document: every route, the named schemas, and the security schemes. */
export function openApiDocument(
  routes: readonly ApiRoute[],
  options: {
    title: string;
    version: string;
    description: string;
    serverUrl: string;
    errorSchema: z.ZodType;
    schemas: NamedSchemas;
  },
): JsonObject {
  const converter = schemaConverter(options.schemas);
  const paths: Record<string, JsonObject> = {};
  for (const route of routes) {
    const path = openApiPath(route.path);
    paths[path] ??= {};
    paths[path][route.method] = operation(route, converter, options.errorSchema);
  }
  // Named schemas no JSON answer holds (the stream envelope, WebSocket messages) appear too.
  for (const schema of Object.values(options.schemas)) converter.convert(schema, "output");
  return {
    openapi: "3.1.0",
    info: { title: options.title, version: options.version, description: options.description },
    servers: [{ url: options.serverUrl }],
    tags: [...new Set(routes.map((route) => route.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: converter.components(),
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: "An API token (`wsk_…`), created on the dashboard or POST /api/tokens",
        },
        session: {
          type: "apiKey",
          in: "cookie",
          name: "websocks_session",
          description: "The dashboard's session; changes also need a same-origin request",
        },
        queryToken: {
          type: "apiKey",
          in: "query",
          name: "token",
          description: "An API token in the query, for clients that cannot set headers",
        },
      },
    },
  };
}

function operation(
  route: ApiRoute,
  converter: SchemaConverter,
  errorSchema: z.ZodType,
): JsonObject {
  const parameters: Json[] = pathParams(route.path).map((name) => ({
    name,
    in: "path",
    required: true,
    description: route.params?.[name] ?? name,
    schema: { type: "string" },
  }));
  for (const [name, field] of Object.entries(route.query?.shape ?? {})) {
    const schema = converter.convert(field as z.ZodType, "input");
    const description = typeof schema.description === "string" ? schema.description : undefined;
    parameters.push({
      name,
      in: "query",
      required: !(field as z.ZodType).safeParse(undefined).success,
      ...(description ? { description } : {}),
      schema,
    });
  }
  const responses: JsonObject = {};
  for (const [status, response] of Object.entries(route.responses)) {
    const type = response.contentType ?? "application/json";
    responses[status] = {
      description: response.description,
      ...(response.schema || type !== "application/json"
        ? {
          content: {
            [type]: response.schema ? { schema: converter.convert(response.schema, "output") } : {},
          },
        }
        : {}),
    };
  }
  responses.default = {
    description: "Any other error",
    content: { "application/json": { schema: converter.convert(errorSchema, "output") } },
  };
  const security: Json[] = route.auth === "none"
    ? []
    : route.auth === "account"
    ? [{ bearer: [] }, { session: [] }]
    : [{ bearer: [] }, { session: [] }, { queryToken: [] }];
  return {
    operationId: operationId(route),
    tags: [route.tag],
    summary: route.summary,
    ...(route.description || route.scope
      ? {
        description: [
          route.description,
          route.scope ? `Needs a token with the \`${route.scope}\` scope.` : undefined,
        ].filter(Boolean).join("\n\n"),
      }
      : {}),
    ...(parameters.length ? { parameters } : {}),
    ...(route.body
      ? {
        requestBody: {
          required: true,
          content: { "application/json": { schema: converter.convert(route.body, "input") } },
        },
      }
      : {}),
    responses,
    security,
  };
}

/** A unique, readable id: `get_api_tokens_id`. */
function operationId(route: ApiRoute): string {
  return `${route.method}${route.path.replace(/[^A-Za-z0-9]+/g, "_")}`.replace(/_$/, "");
}

interface SchemaConverter {
  convert(schema: z.ZodType, io: "input" | "output"): JsonObject;
  components(): JsonObject;
}

/**
 * Converts schemas to JSON Schema, with every named schema emitted once under
 * components.schemas and referenced elsewhere. Names and descriptions live in zod's global
 * registry (`.describe()`, `.meta()`), where the schemas' authors put them.
 */
function schemaConverter(named: NamedSchemas): SchemaConverter {
  for (const [id, schema] of Object.entries(named)) {
    const meta = z.globalRegistry.get(schema);
    if (meta?.id !== id) z.globalRegistry.add(schema, { ...meta, id });
  }
  const components: JsonObject = {};
  const convert = (schema: z.ZodType, io: "input" | "output"): JsonObject => {
    const json = z.toJSONSchema(schema, {
      target: "draft-2020-12",
      io,
      // Refinements and coercions have no JSON Schema: the type they start from stands.
      unrepresentable: "any",
    }) as JsonObject;
    const defs = (json.$defs ?? {}) as JsonObject;
    delete json.$defs;
    delete json.$schema;
    for (const [id, def] of Object.entries(defs)) {
      // Input and output differ (defaults, optional): the first use names the component.
      components[id] ??= refsToComponents(def);
    }
    return refsToComponents(json) as JsonObject;
  };
  return { convert, components: () => components };
}

/** zod refers to its `$defs`; the document keeps them in components.schemas. */
function refsToComponents(value: Json): Json {
  if (Array.isArray(value)) return value.map(refsToComponents);
  if (value === null || typeof value !== "object") return value;
  const out: JsonObject = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key] = key === "$ref" && typeof inner === "string"
      ? inner.replace(/^#\/\$defs\//, "#/components/schemas/")
      : refsToComponents(inner);
  }
  return out;
}
