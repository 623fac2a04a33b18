/** Flattens the OpenAPI document into what the reference page lists: operations and schema fields. */

interface SchemaObject {
  $ref?: string;
  type?: string | string[];
  description?: string;
  properties?: Record<string, SchemaObject>;
  required?: string[];
  items?: SchemaObject;
  anyOf?: SchemaObject[];
  oneOf?: SchemaObject[];
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  format?: string;
}

interface Operation {
  summary?: string;
  description?: string;
  security?: unknown[];
  parameters?: { name: string; in: string; required?: boolean; description?: string; schema?: SchemaObject }[];
  requestBody?: { content?: Record<string, { schema?: SchemaObject }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: SchemaObject }> }>;
}

export interface OpenApiDocument {
  info: { title: string; version: string; description?: string };
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, SchemaObject> };
}

export interface FieldRow {
  name: string;
  type: string;
  required: boolean;
  rule: string;
}

export interface OperationView {
  id: string;
  method: string;
  path: string;
  summary: string;
  description: string;
  auth: boolean;
  parameters: FieldRow[];
  requestSchema: string | undefined;
  responses: { status: string; description: string; schema: string | undefined }[];
}

const refName = (schema: SchemaObject | undefined): string | undefined => schema?.$ref?.split('/').at(-1);

/** A short type name: `string`, `integer`, `Tenant[]`, `string | null`. */
export function typeOf(schema: SchemaObject | undefined): string {
  if (!schema) return 'any';
  const ref = refName(schema);
  if (ref) return ref;
  const variants = schema.anyOf ?? schema.oneOf;
  if (variants) return variants.map(typeOf).join(' | ');
  if (schema.type === 'array') return `${typeOf(schema.items)}[]`;
  if (schema.enum) return schema.enum.map((value) => JSON.stringify(value)).join(' | ');
  return Array.isArray(schema.type) ? schema.type.join(' | ') : (schema.type ?? 'any');
}

function ruleOf(schema: SchemaObject): string {
  const parts: string[] = [];
  if (schema.description) parts.push(schema.description);
  if (schema.pattern) parts.push(`pattern ${schema.pattern}`);
  if (schema.format) parts.push(schema.format);
  if (schema.minimum !== undefined || schema.maximum !== undefined) parts.push(`${schema.minimum ?? '…'} to ${schema.maximum ?? '…'}`);
  if (schema.minLength !== undefined || schema.maxLength !== undefined)
    parts.push(`${schema.minLength ?? 0}–${schema.maxLength ?? '…'} chars`);
  return parts.join('; ');
}

export function fieldsOf(schema: SchemaObject | undefined): FieldRow[] {
  if (!schema?.properties) return [];
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties).map(([name, property]) => ({
    name,
    type: typeOf(property),
    required: required.has(name),
    rule: ruleOf(property),
  }));
}

export function operationsOf(document: OpenApiDocument): OperationView[] {
  return Object.entries(document.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({
      id: `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, '-').replace(/-$/, ''),
      method: method.toUpperCase(),
      path,
      summary: operation.summary ?? '',
      description: operation.description ?? '',
      auth: (operation.security ?? []).length > 0,
      parameters: (operation.parameters ?? []).map((parameter) => ({
        name: `${parameter.name} (${parameter.in})`,
        type: typeOf(parameter.schema),
        required: parameter.required ?? false,
        rule: parameter.description ?? (parameter.schema ? ruleOf(parameter.schema) : ''),
      })),
      requestSchema: refName(operation.requestBody?.content?.['application/json']?.schema),
      responses: Object.entries(operation.responses ?? {}).map(([status, response]) => ({
        status,
        description: response.description ?? '',
        schema:
          typeOf(response.content?.['application/json']?.schema) === 'any'
            ? undefined
            : typeOf(response.content?.['application/json']?.schema),
      })),
    })),
  );
}
