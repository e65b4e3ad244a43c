/**
 * /docs/api: the OpenAPI document for people, rendered on the server from the document itself
 * (so the page and /api/openapi.json always agree): each route with its parameters, body and
 * answers, then the named schemas (the envelope and WebSocket messages among them). No scripts.
 */
import type { ComponentChildren } from "preact";
import { Layout, type LayoutUser } from "../Layout.tsx";

/** A JSON Schema or document node, as the document holds it. */
// deno-lint-ignore no-explicit-any
type Node = Record<string, any>;

const METHOD_ORDER = ["get", "post", "put", "patch", "delete", "options", "head"];

/** The API reference page. */
export function ApiReferencePage(props: { user?: LayoutUser | null; document: Node }) {
  const doc = props.document;
  const operations = Object.entries(doc.paths as Node).flatMap(([path, item]) =>
    Object.entries(item as Node)
      .sort(([a], [b]) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b))
      .map(([method, operation]) => ({ path, method, operation: operation as Node }))
  );
  const tags = (doc.tags as { name: string }[]).map((tag) => tag.name);
  const schemas = Object.entries((doc.components?.schemas ?? {}) as Node);
  return (
    <Layout title="API reference: WebSocks" user={props.user} section="docs">
      <h1>API reference</h1>
      <div class="card intro">
        <p>
          Every route of the HTTP API, generated from the schemas the server validates with. The
          same description as OpenAPI 3.1: <a href="/api/openapi.json">/api/openapi.json</a>{" "}
          (for code generators and API tools). Guides and examples: <a href="/docs">Docs</a>.
        </p>
        <p>
          Errors are always JSON: <code>{'{"error": "what failed and why"}'}</code>. Send{" "}
          <code>Authorization: Bearer &lt;token&gt;</code>; streams also take <code>?token=</code>.
        </p>
        <nav aria-label="API sections">
          <ul>
            {tags.map((tag) => (
              <li key={tag}>
                <a href={`#tag-${slug(tag)}`}>{tag}</a>
              </li>
            ))}
            <li>
              <a href="#schemas">Schemas</a>
            </li>
          </ul>
        </nav>
      </div>
      {tags.map((tag) => (
        <section key={tag} id={`tag-${slug(tag)}`}>
          <h2>{tag}</h2>
          {operations.filter(({ operation }) => operation.tags?.[0] === tag).map((one) => (
            <Operation key={`${one.method} ${one.path}`} {...one} />
          ))}
        </section>
      ))}
      <section id="schemas">
        <h2>Schemas</h2>
        {schemas.map(([name, schema]) => (
          <div class="card" key={name} id={`schema-${name}`}>
            <h3>
              <code>{name}</code>
            </h3>
            {schema.description && (
              <p>
                <Prose text={schema.description} />
              </p>
            )}
            <SchemaView schema={schema} />
          </div>
        ))}
      </section>
    </Layout>
  );
}

function Operation(props: { path: string; method: string; operation: Node }) {
  const { operation } = props;
  const parameters = (operation.parameters ?? []) as Node[];
  const body = operation.requestBody?.content?.["application/json"]?.schema as Node | undefined;
  const auth = (operation.security as Node[]).map((one) => Object.keys(one)[0]);
  return (
    <div class="card" id={operation.operationId}>
      <h3>
        <code>{props.method.toUpperCase()} {props.path}</code> {operation.summary}
      </h3>
      {operation.description && (
        <p>
          <Prose text={operation.description} />
        </p>
      )}
      <p>
        <strong>Auth:</strong> {auth.length === 0 ? "none" : auth.map(authLabel).join(", or ")}
      </p>
      {parameters.length > 0 && (
        <>
          <h4>Parameters</h4>
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>In</th>
                <th>Type</th>
                <th>Description</th>
              </tr>
            </thead>
            <tbody>
              {parameters.map((parameter) => (
                <tr key={`${parameter.in} ${parameter.name}`}>
                  <td>
                    <code>{parameter.name}</code>
                    {parameter.required ? "" : " (optional)"}
                  </td>
                  <td>{parameter.in}</td>
                  <td>{typeLabel(parameter.schema)}</td>
                  <td>
                    <Prose text={parameter.description ?? parameter.schema?.description ?? ""} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {body && (
        <>
          <h4>Body (JSON)</h4>
          <SchemaView schema={body} />
        </>
      )}
      <h4>Answers</h4>
      <dl>
        {Object.entries(operation.responses as Node).map(([status, response]) => {
          const content = Object.entries((response.content ?? {}) as Node)[0];
          return (
            <Answer key={status} status={status} description={response.description}>
              {content && content[0] !== "application/json" && <code>{content[0]}</code>}
              {content?.[1]?.schema && <SchemaView schema={content[1].schema} />}
            </Answer>
          );
        })}
      </dl>
    </div>
  );
}

function Answer(props: { status: string; description: string; children: ComponentChildren }) {
  return (
    <>
      <dt>
        <code>{props.status}</code>
      </dt>
      <dd>
        <Prose text={props.description} />
        {props.children}
      </dd>
    </>
  );
}

/** A schema as people read it: a reference's name, a type, or an object's fields as a table. */
function SchemaView(props: { schema: Node }) {
  const { schema } = props;
  if (schema.type === "object" && schema.properties) return <Fields schema={schema} />;
  if (Array.isArray(schema.oneOf ?? schema.anyOf) && !isNullable(schema)) {
    return (
      <ul>
        {(schema.oneOf ?? schema.anyOf).map((one: Node, i: number) => (
          <li key={i}>
            <SchemaView schema={one} />
          </li>
        ))}
      </ul>
    );
  }
  return <p>{typeLabel(schema)}</p>;
}

function Fields(props: { schema: Node }) {
  const required = new Set<string>(props.schema.required ?? []);
  return (
    <table>
      <thead>
        <tr>
          <th>Field</th>
          <th>Type</th>
          <th>Description</th>
        </tr>
      </thead>
      <tbody>
        {Object.entries(props.schema.properties as Node).map(([name, field]) => (
          <tr key={name}>
            <td>
              <code>{name}</code>
              {required.has(name) ? "" : " (optional)"}
            </td>
            <td>
              <FieldType schema={field} />
            </td>
            <td>
              <Prose text={field.description ?? ""} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** A field's type: an object's own fields as a nested table (also when it may be null). */
function FieldType(props: { schema: Node }) {
  const { schema } = props;
  if (schema.type === "object" && schema.properties) return <Fields schema={schema} />;
  const options = (schema.anyOf ?? schema.oneOf) as Node[] | undefined;
  const object = options?.find((one) => one.type === "object" && one.properties);
  if (object && isNullable(schema)) {
    return (
      <>
        null, or <Fields schema={object} />
      </>
    );
  }
  return <>{typeLabel(schema)}</>;
}

/** A short type: `string`, `integer or null`, `array of PublicToken`, `"webhook"`. */
function typeLabel(schema: Node | undefined): ComponentChildren {
  if (!schema || Object.keys(schema).length === 0) return "any";
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop();
    return <a href={`#schema-${name}`}>{name}</a>;
  }
  if ("const" in schema) return <code>{JSON.stringify(schema.const)}</code>;
  if (Array.isArray(schema.enum)) {
    return schema.enum.map((value: unknown) => JSON.stringify(value)).join(" | ");
  }
  const options = schema.anyOf ?? schema.oneOf;
  if (Array.isArray(options)) {
    return options.map((one: Node, i: number) => (
      <>
        {i > 0 && " or "}
        {typeLabel(one)}
      </>
    ));
  }
  if (schema.type === "array") return <>array of {typeLabel(schema.items)}</>;
  if (schema.type === "object") {
    return schema.additionalProperties && typeof schema.additionalProperties === "object"
      ? <>object of {typeLabel(schema.additionalProperties)}</>
      : "object";
  }
  return Array.isArray(schema.type) ? schema.type.join(" or ") : String(schema.type ?? "any");
}

/** Text with `code` spans, as the descriptions write them. */
function Prose(props: { text: string }) {
  return (
    <>
      {props.text.split("`").map((part, i) => i % 2 === 1 ? <code key={i}>{part}</code> : part)}
    </>
  );
}

function isNullable(schema: Node): boolean {
  const options = (schema.anyOf ?? schema.oneOf) as Node[];
  return options.length === 2 && options.some((one) => one.type === "null");
}

function authLabel(scheme: string): string {
  return scheme === "bearer"
    ? "bearer token"
    : scheme === "session"
    ? "session cookie"
    : "token in the query";
}

function slug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-");
}
