"""The reference shop: schema, seed data and the queries the service runs.

Realistic on purpose: catalog pages join products, categories and reviews and aggregate
ratings and sales; the trending list aggregates recent views; a profile joins a user's
orders. Seeding uses ``generate_series`` in SQL (seconds, not minutes) and is
deterministic, so two runs measure the same data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShopSize:
    categories: int = 50
    products: int = 5_000
    users: int = 2_000
    orders: int = 20_000
    reviews: int = 30_000


DDL = """
CREATE TABLE IF NOT EXISTS categories (
    id int PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id int PRIMARY KEY,
    category_id int NOT NULL REFERENCES categories(id),
    name text NOT NULL,
    description text NOT NULL,
    price_cents int NOT NULL CHECK (price_cents >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_category ON products (category_id);
CREATE TABLE IF NOT EXISTS users (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    bio text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS accounts (
    user_id int PRIMARY KEY REFERENCES users(id),
    balance_cents bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users(id),
    product_id int NOT NULL REFERENCES products(id),
    quantity int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id);
CREATE INDEX IF NOT EXISTS orders_product ON orders (product_id);
CREATE TABLE IF NOT EXISTS reviews (
    id bigserial PRIMARY KEY,
    product_id int NOT NULL REFERENCES products(id),
    user_id int NOT NULL REFERENCES users(id),
    stars int NOT NULL CHECK (stars BETWEEN 1 AND 5)
);
CREATE INDEX IF NOT EXISTS reviews_product ON reviews (product_id);
CREATE TABLE IF NOT EXISTS product_views (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    version bigint NOT NULL,
    direct_views bigint NOT NULL DEFAULT 0
);
"""
# Views counted while Redis is down: straight into their own column, which the
# write-behind flusher (it sets value and version) never touches, so none is lost.
COUNT_VIEW_DIRECT = """
INSERT INTO product_views (key, value, version, direct_views)
VALUES (%(key)s, jsonb_build_object('product_id', %(id)s::int, 'views', 0), 0, 1)
ON CONFLICT (key) DO UPDATE SET direct_views = product_views.direct_views + 1
RETURNING coalesce((value->>'views')::bigint, 0) + direct_views
"""


def seed_sql(size: ShopSize) -> list[str]:
    """Statements that fill an empty shop deterministically (``setseed`` first)."""
    return [
        "SELECT setseed(0.42)",
        f"INSERT INTO categories SELECT g, 'Category ' || g FROM generate_series(1, {size.categories}) g",
        f"""INSERT INTO products
            SELECT g, 1 + (g % {size.categories}), 'Product ' || g,
                   repeat('A fine product. ', 8 + (g % 16)), 199 + (g * 37) % 20000
            FROM generate_series(1, {size.products}) g""",
        f"""INSERT INTO users SELECT g, 'User ' || g, 'user' || g || '@example.test', 'Hello from ' || g
            FROM generate_series(1, {size.users}) g""",
        f"INSERT INTO accounts SELECT g, 10000 FROM generate_series(1, {size.users}) g",
        f"""INSERT INTO orders (user_id, product_id, quantity, created_at)
            SELECT 1 + (random() * ({size.users} - 1))::int, 1 + (random() * ({size.products} - 1))::int,
                   1 + (g % 3), now() - (random() * interval '90 days')
            FROM generate_series(1, {size.orders}) g""",
        f"""INSERT INTO reviews (product_id, user_id, stars)
            SELECT 1 + (random() * ({size.products} - 1))::int, 1 + (random() * ({size.users} - 1))::int,
                   1 + (random() * 4)::int
            FROM generate_series(1, {size.reviews}) g""",
        "ANALYZE",
    ]


# -- the service's reads (one statement each: one request miss = one database read) -----

PRODUCT_PAGE = """
SELECT p.id, p.name, p.description, p.price_cents, c.id AS category_id, c.name AS category,
       coalesce(r.rating, 0)::float AS rating, coalesce(r.reviews, 0) AS reviews,
       coalesce(o.sold, 0) AS sold
FROM products p
JOIN categories c ON c.id = p.category_id
LEFT JOIN LATERAL (SELECT avg(stars) AS rating, count(*) AS reviews FROM reviews WHERE product_id = p.id) r ON true
LEFT JOIN LATERAL (SELECT sum(quantity) AS sold FROM orders WHERE product_id = p.id) o ON true
WHERE p.id = %s
"""

CATEGORY_PAGE = """
SELECT p.id, p.name, p.price_cents, coalesce(avg(r.stars), 0)::float AS rating
FROM products p
LEFT JOIN reviews r ON r.product_id = p.id
WHERE p.category_id = %s
GROUP BY p.id
ORDER BY p.id
LIMIT 24
"""

PROFILE = """
SELECT u.id, u.name, u.email, u.bio, count(o.id) AS orders,
       coalesce(sum(o.quantity * p.price_cents), 0) AS spent_cents
FROM users u
LEFT JOIN orders o ON o.user_id = u.id
LEFT JOIN products p ON p.id = o.product_id
WHERE u.id = %s
GROUP BY u.id
"""

#: The profile read back inside a profile update (part of the write; a different statement
#: so PostgreSQL's own statistics keep it apart from cache-miss reads).
PROFILE_IN_WRITE = PROFILE.replace("WHERE u.id = %s", "WHERE u.id = %s AND u.id > 0")

BALANCE = "SELECT balance_cents FROM accounts WHERE user_id = %s"

TRENDING = """
SELECT p.id, p.name, sum(o.quantity) AS sold
FROM orders o JOIN products p ON p.id = o.product_id
WHERE o.created_at > now() - interval '30 days'
GROUP BY p.id, p.name
ORDER BY sold DESC, p.id
LIMIT 20
"""

# -- writes --------------------------------------------------------------------------------

UPDATE_PROFILE = "UPDATE users SET bio = %s, updated_at = now() WHERE id = %s RETURNING id"
DEPOSIT = "UPDATE accounts SET balance_cents = balance_cents + %s WHERE user_id = %s RETURNING balance_cents"
UPDATE_PRICE = "UPDATE products SET price_cents = %s, updated_at = now() WHERE id = %s RETURNING category_id"
