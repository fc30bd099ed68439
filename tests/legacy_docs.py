"""The legacy documentation's example objects (legacy reference, section 6), verbatim.

One copy for every test that compares the shim's answers with the docs; independent of the
sandbox's seed, which carries the same values on the platform's side.
"""

DOC_LOCATION = {
    "id": "23789",
    "name": "ABC Merchant",
    "addressLine1": "1 Main Street",
    "addressLine2": "#02-15",
    "city": "Singapore",
    "postalCode": "123456",
    "country": "Singapore"
}

DOC_PRODUCT = {
    "rpc": 100150,
    "productCode": "abc-merch-specific-choc-cereals-code",
    "title": "Chocolate Cereals",
    "barcodes": [
        "111122223333"
    ],
    "status": {
        "type": "Enabled"
    },
    "pickupLocations": [
        {
            "id": "23789"
        }
    ]
}

DOC_STOCK_LOT = {
    "id": "0",
    "quantityAtPickupLocation": 10,
    "quantityScheduledForPickup": 2,
    "quantityAvailableForSale": 8
}

DOC_JOB = {
    "id": 123,
    "status": "pickedup",
    "category": "Dry",
    "scheduledAt": 1684135189000,
    "qtyCount": 11,
    "qtyFulfilledCount": 10,
    "items": [
        {
            "name": "Salmon",
            "sku": "19739731408",
            "qty": 11,
            "rpc": 123456,
            "qtyFulfilled": 10,
            "size": "2.5 kg",
            "vpc": "19739731408",
            "imageUrl": "http://media.redmart.com/newmedia/1600x/i/m/xxx.jpg",
            "minimumExpiryDate": 1770357600000,
            "shipmentsInfo": [
                {
                    "qty": 5,
                    "orderId": "49e74qjnkprp1to4"
                },
                {
                    "qty": 6,
                    "orderId": "49e74qjn1prp1to4"
                }
            ]
        }
    ],
    "pickedAt": 1684136189000,
    "amendabilityCutOffDate": 1684135989000,
    "preferredPickupTime": "13:00-17:00"
}
