/* Names of the schema's enums as they appear in logs, reports and on the
 * legacy wire (FlutterPOS spelling), with reverse look-ups. */
#include <string.h>

#include "posp2p/codec.h"

typedef struct {
  int value;
  const char *name;
} name_entry;

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const name_entry message_types[] = {
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DISCOVERY, "discovery"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ACKNOWLEDGEMENT, "acknowledgement"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HEARTBEAT, "heartbeat"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD, "orderForward"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS, "orderStatus"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_CANCEL, "orderCancel"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_SYNC, "orderSync"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_CART_SYNC, "cartSync"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_PRODUCT_SYNC, "productSync"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_CONFIG_SYNC, "configSync"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_INFO, "deviceInfo"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_SERVER_MODE, "serverMode"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_BROADCAST_UPDATE, "broadcastUpdate"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_COMMAND, "deviceCommand"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_RESPONSE, "deviceResponse"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ERROR, "error"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_WARNING, "warning"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HELLO, "hello"},
  {POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_GOODBYE, "goodbye"},
};

static const name_entry device_types[] = {
  {POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "mainPOS"},
  {POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "orderingTablet"},
  {POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS, "secondaryPOS"},
  {POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS, "kds"},
  {POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_CUSTOMER_DISPLAY, "customerDisplay"},
};

static const name_entry order_statuses[] = {
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PENDING, "pending"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SENT_TO_KITCHEN, "sent_to_kitchen"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PREPARING, "preparing"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_READY, "ready"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SERVED, "served"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_COMPLETED, "completed"},
  {POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_CANCELLED, "cancelled"},
};

static const name_entry destinations[] = {
  {POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS, "mainPOS"},
  {POSP2P__V2__DESTINATION__DESTINATION_SECONDARY_POS, "secondaryPOS"},
  {POSP2P__V2__DESTINATION__DESTINATION_ORDERING_TABLET, "orderingTablet"},
  {POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY, "kitchenDisplay"},
  {POSP2P__V2__DESTINATION__DESTINATION_ALL_DEVICES, "allDevices"},
};

static const name_entry error_codes[] = {
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_UNSPECIFIED, "UNSPECIFIED"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_MALFORMED_FRAME, "MALFORMED_FRAME"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_FRAME_TOO_LARGE, "FRAME_TOO_LARGE"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_INVALID_MESSAGE, "INVALID_MESSAGE"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_HANDSHAKE_REQUIRED, "HANDSHAKE_REQUIRED"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_UNKNOWN_DEVICE, "UNKNOWN_DEVICE"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_DEVICE_OFFLINE, "DEVICE_OFFLINE"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_DUPLICATE_DEVICE_ID, "DUPLICATE_DEVICE_ID"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE_TYPE, "UNKNOWN_MESSAGE_TYPE"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_DELIVERY_FAILED, "DELIVERY_FAILED"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_QUEUE_FULL, "QUEUE_FULL"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_TOO_MANY_CONNECTIONS, "TOO_MANY_CONNECTIONS"},
  {POSP2P__V2__ERROR_CODE__ERROR_CODE_INTERNAL, "INTERNAL"},
};

static const char *lookup_name(const name_entry *t, size_t n, int v) {
  for (size_t i = 0; i < n; i++)
    if (t[i].value == v) return t[i].name;
  return NULL;
}

static int lookup_value(const name_entry *t, size_t n, const char *s,
                        size_t len) {
  if (s == NULL) return -1;
  for (size_t i = 0; i < n; i++)
    if (strlen(t[i].name) == len && memcmp(t[i].name, s, len) == 0)
      return t[i].value;
  return -1;
}

#define NAME_FUNCS(kind, table)                                       \
  const char *posp2p_##kind##_name(int v) {                           \
    return lookup_name(table, N_ELEMS(table), v);                     \
  }                                                                   \
  int posp2p_##kind##_from_name(const char *s, size_t n) {            \
    return lookup_value(table, N_ELEMS(table), s, n);                 \
  }

NAME_FUNCS(message_type, message_types)
NAME_FUNCS(device_type, device_types)
NAME_FUNCS(order_status, order_statuses)
NAME_FUNCS(destination, destinations)
NAME_FUNCS(error_code, error_codes)
