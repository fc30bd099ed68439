"""The legacy OAuth2 scopes, one per kind of access (legacy reference, section 1)."""

READ_PICKUP_LOCATION = "read:pickup-location"
READ_PRODUCT = "read:product"
READ_STOCK_LOT = "read:stock-lot"
WRITE_STOCK_LOT = "write:stock-lot"
READ_PICKUP_JOB = "read:pickup-job"

ALL = (READ_PICKUP_LOCATION, READ_PRODUCT, READ_STOCK_LOT, WRITE_STOCK_LOT, READ_PICKUP_JOB)
