//! What the database says its tables are: columns, primary keys, foreign keys
//! and indexes, read from the catalog of each backend and reduced to what
//! adoption compares and convergence changes. An INVALID index (left by an
//! interrupted concurrent build) is no index: nothing uses it.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement};

/// One table, as the catalog describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Columns by name.
    pub columns: BTreeMap<String, Column>,
    /// Primary-key columns, in key order.
    pub primary_key: Vec<String>,
    /// Foreign keys, by their constraint name.
    pub foreign_keys: BTreeMap<String, ForeignKey>,
    /// Indexes other than the primary key's, by name.
    pub indexes: BTreeMap<String, Index>,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The type, normalised by [`kind`] (`text` for every string type).
    pub kind: String,
    /// Whether it accepts NULL.
    pub nullable: bool,
    /// Filled from a sequence, an identity or `AUTO_INCREMENT`, or SQLite's rowid.
    pub generated: bool,
}

/// One foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing columns.
    pub columns: Vec<String>,
    /// The referenced table.
    pub target_table: String,
    /// The referenced columns.
    pub target_columns: Vec<String>,
    /// `CASCADE`, `SET NULL`, `SET DEFAULT`, `RESTRICT` or `NO ACTION`.
    pub on_delete: String,
}

impl ForeignKey {
    /// `tasks(id)`.
    pub fn target(&self) -> String {
        format!("{}({})", self.target_table, self.target_columns.join(", "))
    }
}

/// One index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The indexed columns, in index order (expressions left out).
    pub columns: Vec<String>,
    /// Whether it is a unique index.
    pub unique: bool,
}

impl Table {
    /// Whether some index (or the primary key) starts with `column`, so
    /// lookups by it need not scan the table.
    pub fn is_indexed(&self, column: &str) -> bool {
        self.primary_key.first().is_some_and(|c| c == column)
            || self
                .indexes
                .values()
                .any(|i| i.columns.first().is_some_and(|c| c == column))
    }

    /// Indexes on exactly the primary-key columns: the key's own index
    /// already serves every lookup they could.
    pub fn duplicates_of_primary_key(&self) -> Vec<String> {
        self.indexes
            .iter()
            .filter(|(_, i)| !self.primary_key.is_empty() && i.columns == self.primary_key)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The foreign key on exactly `column`, with its constraint name.
    pub fn foreign_key_on(&self, column: &str) -> Option<(&String, &ForeignKey)> {
        self.foreign_keys
            .iter()
            .find(|(_, fk)| fk.columns.len() == 1 && fk.columns[0] == column)
    }
}

/// The tables of the connection's current schema (PostgreSQL), database
/// (MySQL) or main database (SQLite), by name.
pub async fn tables(conn: &impl ConnectionTrait) -> Result<BTreeMap<String, Table>, DbErr> {
    match conn.get_database_backend() {
        DbBackend::Postgres => {
            from_catalog(
                conn,
                [POSTGRES_COLUMNS, POSTGRES_FOREIGN_KEYS, POSTGRES_INDEXES],
            )
            .await
        }
        DbBackend::MySql => {
            from_catalog(conn, [MYSQL_COLUMNS, MYSQL_FOREIGN_KEYS, MYSQL_INDEXES]).await
        }
        _ => sqlite(conn).await,
    }
}

/// A type name reduced to what adoption compares: lower case, without a
/// length or precision, and every string type as `text`.
pub fn kind(type_name: &str) -> String {
    let name = type_name.trim().to_ascii_lowercase();
    let base = name.split('(').next().unwrap_or_default().trim();
    let base = base.trim_end_matches(" unsigned").trim();
    let kind = match base {
        "character varying" | "varchar" | "text" | "character" | "char" | "bpchar" | "nvarchar"
        | "nchar" | "tinytext" | "mediumtext" | "longtext" | "clob" | "string" => "text",
        "integer" | "int" | "int4" | "mediumint" => "integer",
        "bigint" | "int8" => "bigint",
        "smallint" | "int2" => "smallint",
        "date" | "date_text" => "date",
        "timestamp"
        | "timestamp without time zone"
        | "datetime"
        | "datetime_text"
        | "timestamp_text" => "timestamp",
        "timestamp with time zone" | "timestamptz" | "timestamp_with_timezone_text" => {
            "timestamptz"
        }
        "boolean" | "bool" => "boolean",
        "real" | "float4" | "float" => "real",
        "double precision" | "double" | "float8" => "double",
        "numeric" | "decimal" | "real_money" => "decimal",
        "bytea" | "blob" | "binary" | "varbinary" | "longblob" => "binary",
        other => other,
    };
    kind.to_owned()
}

fn text(row: &QueryResult, index: usize) -> Result<String, DbErr> {
    row.try_get_by_index::<String>(index)
        .map_err(|e| DbErr::Custom(format!("reading the catalog: {e}")))
}

fn flag(row: &QueryResult, index: usize) -> Result<bool, DbErr> {
    row.try_get_by_index::<bool>(index)
        .or_else(|_| row.try_get_by_index::<i64>(index).map(|v| v != 0))
        .or_else(|_| row.try_get_by_index::<i32>(index).map(|v| v != 0))
        .map_err(|e| DbErr::Custom(format!("reading the catalog: {e}")))
}

fn list(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn on_delete(rule: &str) -> String {
    match rule.trim().to_ascii_uppercase().as_str() {
        // PostgreSQL's confdeltype letters.
        "C" | "CASCADE" => "CASCADE",
        "N" | "SET NULL" => "SET NULL",
        "D" | "SET DEFAULT" => "SET DEFAULT",
        "R" | "RESTRICT" => "RESTRICT",
        _ => "NO ACTION",
    }
    .to_owned()
}

async fn rows(conn: &impl ConnectionTrait, sql: &str) -> Result<Vec<QueryResult>, DbErr> {
    conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
}

const POSTGRES_COLUMNS: &str = "\
SELECT c.relname::text, a.attname::text, format_type(a.atttypid, NULL), NOT a.attnotnull, \
       (a.attidentity <> '' OR COALESCE(pg_get_expr(d.adbin, d.adrelid), '') LIKE 'nextval(%') \
FROM pg_class c \
JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
ORDER BY 1, a.attnum";

const POSTGRES_FOREIGN_KEYS: &str = "\
SELECT c.relname::text, con.conname::text, \
       array_to_string(ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o) \
           JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), ','), \
       t.relname::text, \
       array_to_string(ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o) \
           JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o), ','), \
       con.confdeltype::text \
FROM pg_constraint con \
JOIN pg_class c ON c.oid = con.conrelid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_class t ON t.oid = con.confrelid \
WHERE n.nspname = current_schema() AND con.contype = 'f' \
ORDER BY 1, 2";

const POSTGRES_INDEXES: &str = "\
SELECT c.relname::text, i.relname::text, ix.indisunique, \
       array_to_string(ARRAY(SELECT a.attname FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, o) \
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n ORDER BY k.o), ','), \
       ix.indisprimary \
FROM pg_index ix \
JOIN pg_class c ON c.oid = ix.indrelid \
JOIN pg_class i ON i.oid = ix.indexrelid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE n.nspname = current_schema() AND ix.indisvalid \
ORDER BY 1, 2";

const MYSQL_COLUMNS: &str = "\
SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
       IS_NULLABLE = 'YES', EXTRA LIKE '%auto_increment%' \
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
ORDER BY TABLE_NAME, ORDINAL_POSITION";

const MYSQL_FOREIGN_KEYS: &str = "\
SELECT CAST(k.TABLE_NAME AS CHAR), CAST(k.CONSTRAINT_NAME AS CHAR), \
       CAST(GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ',') AS CHAR), \
       CAST(MAX(k.REFERENCED_TABLE_NAME) AS CHAR), \
       CAST(GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ',') AS CHAR), \
       CAST(MAX(r.DELETE_RULE) AS CHAR) \
FROM information_schema.KEY_COLUMN_USAGE k \
JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
 AND r.TABLE_NAME = k.TABLE_NAME \
WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL \
GROUP BY k.TABLE_NAME, k.CONSTRAINT_NAME ORDER BY 1, 2";

const MYSQL_INDEXES: &str = "\
SELECT CAST(TABLE_NAME AS CHAR), CAST(INDEX_NAME AS CHAR), MAX(NON_UNIQUE) = 0, \
       CAST(GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX SEPARATOR ',') AS CHAR), \
       INDEX_NAME = 'PRIMARY' \
FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
GROUP BY TABLE_NAME, INDEX_NAME ORDER BY 1, 2";

/// PostgreSQL and MySQL: three catalog queries with the same columns each.
/// Columns: table, column, type, nullable, generated. Foreign keys: table,
/// name, columns, target table, target columns, delete rule. Indexes: table,
/// name, unique, columns, primary.
async fn from_catalog(
    conn: &impl ConnectionTrait,
    [columns, foreign_keys, indexes]: [&str; 3],
) -> Result<BTreeMap<String, Table>, DbErr> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows(conn, columns).await? {
        let column = Column {
            kind: kind(&text(&row, 2)?),
            nullable: flag(&row, 3)?,
            generated: flag(&row, 4)?,
        };
        tables
            .entry(text(&row, 0)?)
            .or_default()
            .columns
            .insert(text(&row, 1)?, column);
    }
    for row in rows(conn, foreign_keys).await? {
        if let Some(table) = tables.get_mut(&text(&row, 0)?) {
            let fk = ForeignKey {
                columns: list(&text(&row, 2)?),
                target_table: text(&row, 3)?,
                target_columns: list(&text(&row, 4)?),
                on_delete: on_delete(&text(&row, 5)?),
            };
            table.foreign_keys.insert(text(&row, 1)?, fk);
        }
    }
    for row in rows(conn, indexes).await? {
        if let Some(table) = tables.get_mut(&text(&row, 0)?) {
            let columns = list(&text(&row, 3)?);
            if flag(&row, 4)? {
                table.primary_key = columns;
            } else {
                let unique = flag(&row, 2)?;
                table
                    .indexes
                    .insert(text(&row, 1)?, Index { columns, unique });
            }
        }
    }
    Ok(tables)
}

async fn sqlite(conn: &impl ConnectionTrait) -> Result<BTreeMap<String, Table>, DbErr> {
    let names = rows(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .await?;
    let mut tables = BTreeMap::new();
    for row in names {
        let name = text(&row, 0)?;
        let quoted = name.replace('\'', "''");
        let mut table = Table::default();
        let mut key: Vec<(i64, String)> = Vec::new();
        let mut integer_key = false;
        // cid, name, type, notnull, dflt_value, pk
        for column in rows(conn, &format!("PRAGMA table_info('{quoted}')")).await? {
            let column_name = text(&column, 1)?;
            let declared = text(&column, 2)?;
            let position: i64 = column.try_get_by_index(5)?;
            if position > 0 {
                key.push((position, column_name.clone()));
                integer_key = declared.eq_ignore_ascii_case("integer");
            }
            let entry = Column {
                kind: kind(&declared),
                nullable: !flag(&column, 3)? && position == 0,
                generated: false,
            };
            table.columns.insert(column_name, entry);
        }
        key.sort();
        table.primary_key = key.into_iter().map(|(_, c)| c).collect();
        // A single INTEGER PRIMARY KEY is the rowid: new rows get the next one.
        if let ([column], true) = (table.primary_key.as_slice(), integer_key)
            && let Some(entry) = table.columns.get_mut(column)
        {
            entry.generated = true;
        }
        // id, seq, table, from, to, on_update, on_delete, match
        let mut foreign_keys: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for fk in rows(conn, &format!("PRAGMA foreign_key_list('{quoted}')")).await? {
            let id: i64 = fk.try_get_by_index(0)?;
            let entry = foreign_keys.entry(id).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                target_table: String::new(),
                target_columns: Vec::new(),
                on_delete: String::new(),
            });
            entry.columns.push(text(&fk, 3)?);
            entry.target_table = text(&fk, 2)?;
            entry.target_columns.push(text(&fk, 4)?);
            entry.on_delete = on_delete(&text(&fk, 6)?);
        }
        // SQLite's foreign keys have no names unless declared; name them by column.
        for fk in foreign_keys.into_values() {
            let name = format!("{name}({})", fk.columns.join(","));
            table.foreign_keys.insert(name, fk);
        }
        // seq, name, unique, origin, partial
        for index in rows(conn, &format!("PRAGMA index_list('{quoted}')")).await? {
            let index_name = text(&index, 1)?;
            if text(&index, 3)? == "pk" {
                continue;
            }
            let unique = flag(&index, 2)?;
            let escaped = index_name.replace('\'', "''");
            // seqno, cid, name
            let columns = rows(conn, &format!("PRAGMA index_info('{escaped}')"))
                .await?
                .iter()
                .map(|c| text(c, 2))
                .collect::<Result<Vec<_>, _>>()?;
            table.indexes.insert(index_name, Index { columns, unique });
        }
        tables.insert(name, table);
    }
    Ok(tables)
}
